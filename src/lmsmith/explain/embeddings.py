"""Where tokens sit in the embedding table: nearest neighbours, and a flat map.

Each token id owns one row of the table (its embedding). Tokens the model uses alike end up
with rows pointing the same way, so cosine similarity finds a token's neighbours; the first
two principal components (PCA) flatten the rows of the most frequent tokens onto a page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import recorded_input


def embedding_table(model) -> np.ndarray:
    return model.tok_emb.weight.detach().double().cpu().numpy()


def nearest(table: np.ndarray, token_id: int, n: int, allowed: np.ndarray) -> list[dict]:
    """The `n` tokens (among `allowed` ids) whose embeddings have the highest cosine similarity to `token_id`'s."""
    rows = table[allowed]
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(table[token_id])
    cosine = rows @ table[token_id] / np.maximum(norms, 1e-300)
    order = [i for i in np.argsort(-cosine, kind="stable") if allowed[i] != token_id][:n]
    return [{"id": int(allowed[i]), "cosine": float(cosine[i])} for i in order]


def pca_map(table: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of the rows `ids` on their first two principal components, and the share of
    the variance each component holds."""
    rows = table[ids]
    centred = rows - rows.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    # The sign of a component is arbitrary: make the largest entry of each positive, so maps are repeatable.
    signs = np.sign(vt[np.arange(2), np.abs(vt[:2]).argmax(axis=1)])
    coords = centred @ (vt[:2].T * signs)
    variance = singular ** 2
    return coords, variance[:2] / variance.sum()


def frequent_tokens(model_dir: Path, allowed: np.ndarray, n: int,
                    max_tokens: int = 2_000_000) -> tuple[np.ndarray, str]:
    """The `n` most frequent of the `allowed` ids in the training tokens the model directory names, and
    where they were counted; without those tokens, the lowest ids (a BPE's bytes and earliest merges)."""
    from lmsmith.core.json_file import read_json
    from lmsmith.text.tokens_dir import open_tokens_dir

    manifest = read_json(model_dir / "manifest.json", fix="restore the model directory") if (
        model_dir / "manifest.json").is_file() else {}
    path = recorded_input(model_dir, manifest, "tokens")
    if path and path.is_dir():
        try:
            shards = open_tokens_dir(path).shards("train")
        except UserError:
            shards = []
        if shards:
            counts = np.zeros(int(allowed.max()) + 1, dtype=np.int64)
            seen = 0
            for shard in shards:
                part = np.asarray(shard[:max_tokens - seen]).astype(np.int64)
                part = part[part < counts.size]
                counts += np.bincount(part, minlength=counts.size)[:counts.size]
                seen += part.size
                if seen >= max_tokens:
                    break
            ranked = allowed[np.argsort(-counts[allowed], kind="stable")]
            ranked = ranked[counts[ranked] > 0]
            return ranked[:n], f"the most frequent in the first {seen:,} training tokens of {path}"
    return allowed[:n], "the lowest ids (the training tokens were not found): for BPE, the bytes and earliest merges"
