"""What each attention head does, measured.

Over windows of held-out text every head gets four numbers (averaged over the positions t >= 1
of every window):

    previous    weight on the token just before (t - 1)
    first       weight on the window's first token: an "attention sink", where a head parks
                attention when nothing else is worth it
    distance    the mean distance back, sum_j weight_j * (t - j)

and on random token sequences shown twice ([R, R]) one more:

    induction   from each token of the second copy, weight on the token after its earlier
                occurrence (the copy-what-came-next trick behind in-context learning)

A head that spreads its attention evenly scores 1/(t + 1) on each; `baseline` holds those
values, and a head is given a role only well above them (`ROLE_MIN`, `ROLE_OVER_BASELINE`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import recorded_input
from lmsmith.explain.trace import trace

ROLES = ("previous", "first", "induction")
ROLE_MIN = 0.3  # a role's score must reach this ...
ROLE_OVER_BASELINE = 3.0  # ... and be this many times what even attention would score


def window_scores(attention: torch.Tensor) -> dict[str, np.ndarray]:
    """previous, first and distance per head from attention (B, heads, T, T), averaged over t >= 1."""
    T = attention.size(-1)
    t = torch.arange(1, T)
    rows = attention[..., 1:, :].double()  # (B, heads, T-1, T)
    previous = rows[..., torch.arange(T - 1), t - 1]
    first = rows[..., 0]
    back = (t[:, None] - torch.arange(T)[None, :]).clamp(min=0).double()  # (T-1, T)
    distance = (rows * back).sum(-1)
    return {name: value.mean(dim=(0, 2)).numpy() for name, value in
            (("previous", previous), ("first", first), ("distance", distance))}


def induction_scores(attention: torch.Tensor, half: int) -> np.ndarray:
    """Per head, from attention (B, heads, 2*half, 2*half) over [R, R]: the mean weight that position
    half + i puts on position i + 1, the token after the earlier occurrence of its own token."""
    i = torch.arange(half)
    return attention[..., half + i, i + 1].double().mean(dim=(0, 2)).numpy()


def random_repeats(vocab: np.ndarray, half: int, n: int, seed: int) -> torch.Tensor:
    """n sequences [R, R] of `half` random ids from `vocab`, no id twice within R."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(vocab, size=half, replace=len(vocab) < half) for _ in range(n)]
    return torch.tensor(np.array([np.concatenate([r, r]) for r in rows]), dtype=torch.long)


def held_out_windows(model_dir: Path, length: int, n: int) -> np.ndarray:
    """n windows of `length` tokens from the validation split the model's manifest names."""
    from lmsmith.core.json_file import read_json
    from lmsmith.text.tokens_dir import open_tokens_dir, read_split

    manifest = read_json(model_dir / "manifest.json", fix="restore the model directory") if (
        model_dir / "manifest.json").is_file() else {}
    path = recorded_input(model_dir, manifest, "tokens")
    if not path or not path.is_dir():
        raise UserError(f"{model_dir} does not name the tokens it was trained on (or they are gone): "
                        "give held-out tokens with --data TOKENS_DIR")
    return windows_of(read_split(open_tokens_dir(path), "val"), length, n, path)


def windows_of(tokens: np.ndarray, length: int, n: int, where: str) -> np.ndarray:
    if tokens.size < length + 1:
        raise UserError(f"{where} holds {tokens.size} validation tokens, fewer than one window of {length}: "
                        "tokenize more held-out text")
    starts = np.linspace(0, tokens.size - length, num=min(n, tokens.size // length)).astype(np.int64)
    return np.stack([np.asarray(tokens[s:s + length], dtype=np.int64) for s in starts])


def baseline(length: int, half: int) -> dict[str, float]:
    """What a head that attends evenly to every visible position scores."""
    t = np.arange(1, length)
    second = half + np.arange(half)
    return {"previous": float(np.mean(1 / (t + 1))), "first": float(np.mean(1 / (t + 1))),
            "distance": float(np.mean(t / 2)), "induction": float(np.mean(1 / (second + 1)))}


def score_heads(model, windows: np.ndarray, vocab: np.ndarray, seed: int = 0, batch: int = 4) -> dict:
    """Every head's scores: {"previous", "first", "distance", "induction"} as (layers, heads) arrays,
    plus "baseline" and the sizes used."""
    device = next(model.parameters()).device
    sums: dict[str, np.ndarray] = {}
    for start in range(0, len(windows), batch):
        ids = torch.as_tensor(windows[start:start + batch], device=device)
        per_layer = [window_scores(a.cpu()) for a in trace(model, ids).attention]
        for name in ("previous", "first", "distance"):
            value = np.stack([layer[name] for layer in per_layer]) * len(ids)
            sums[name] = sums.get(name, 0) + value
    scores = {name: value / len(windows) for name, value in sums.items()}
    half = min(model.config.block_size // 2, windows.shape[1] // 2, 64)
    repeats = random_repeats(vocab, half, n=8, seed=seed).to(device)
    scores["induction"] = np.stack([induction_scores(a.cpu(), half) for a in trace(model, repeats).attention])
    scores["baseline"] = baseline(windows.shape[1], half)
    scores["windows"], scores["window_tokens"], scores["repeat_half"] = len(windows), int(windows.shape[1]), half
    return scores


def role_of(scores: dict, layer: int, head: int) -> str | None:
    """The role a head plays clearly, or None: its best of ROLES, if well above the even baseline."""
    best, value = max(((r, scores[r][layer, head]) for r in ROLES), key=lambda rv: rv[1])
    clear = value >= ROLE_MIN and value >= ROLE_OVER_BASELINE * scores["baseline"][best]
    return best if clear else None


def head_table(scores: dict) -> list[dict]:
    """One row per head, the clearest roles first: {layer, head, role, previous, first, induction, distance}."""
    layers, heads = scores["previous"].shape
    rows = []
    for layer in range(layers):
        for head in range(heads):
            row = {"layer": layer, "head": head, "role": role_of(scores, layer, head)}
            row.update({name: float(scores[name][layer, head]) for name in (*ROLES, "distance")})
            rows.append(row)
    return sorted(rows, key=lambda r: (r["role"] is None, -max(r[name] for name in ROLES)))


def head_table_text(table: list[dict]) -> str:
    """The head table as aligned text, for the terminal."""
    lines = [f"{'head':<8} {'role':<10} {'previous':>8} {'first':>6} {'induction':>9} {'distance':>8}"]
    for r in table:
        lines.append(f"L{r['layer']}H{r['head']:<5} {r['role'] or '-':<10} {r['previous']:>8.2f} {r['first']:>6.2f} "
                     f"{r['induction']:>9.2f} {r['distance']:>8.1f}")
    return "\n".join(lines)
