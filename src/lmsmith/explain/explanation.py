"""Everything `lmsmith explain` shows for one text, as the dict explain.json holds.

Every number comes from one forward pass of the model over the text (and, for --heads, passes
over held-out text and random repeats); the renderers only draw this dict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmsmith.core.errors import UserError
from lmsmith.explain import attention as attention_module
from lmsmith.explain import embeddings, heads, lens, tokens
from lmsmith.explain.trace import trace
from lmsmith.schema.explain import ExplainConfig


def fit_text(tokenizer, text: str, block_size: int) -> tuple[list[int], str | None]:
    """The ids of `text`, the last `block_size` of them if it is longer than the context (with a note)."""
    if not text:
        raise UserError("the text to explain is empty: give some text, e.g. lmsmith explain RUN \"def add(a, b):\"")
    ids = tokenizer.encode(text, what="the text to explain")
    if not ids:
        raise UserError("the text to explain makes no tokens: give some text")
    if len(ids) <= block_size:
        return ids, None
    note = (f"the text is {len(ids)} tokens, longer than the model's context of {block_size}: "
            f"the last {block_size} are explained")
    return ids[-block_size:], note


def allowed_ids(tokenizer, vocab_size: int) -> np.ndarray:
    """Ids of ordinary tokens: in both the model's and the tokenizer's vocabulary, and not special."""
    specials = set(tokenizer.backend.get_added_tokens_decoder())
    return np.array([i for i in range(min(vocab_size, tokenizer.vocab_size)) if i not in specials], dtype=np.int64)


def explain_text(model, tokenizer, text: str, config: ExplainConfig, model_dir: Path | None = None,
                 temperature: float = 0.8, with_embeddings: bool = True) -> dict:
    """The explanation of `text`: tokens, attention, focus, logit lens, next token and (unless left out)
    embeddings."""
    ids, note = fit_text(tokenizer, text, model.config.block_size)
    device = next(model.parameters()).device
    traced = trace(model, torch.tensor([ids], device=device))
    attention = np.stack([a[0].cpu().numpy() for a in traced.attention])  # (layers, heads, T, T)
    logits = traced.logits[0]
    entries = tokens.pieces(tokenizer, ids)
    result = {"text": tokenizer.decode(ids), "note": note, "tokens": entries,
              "model": {"n_layer": model.config.n_layer, "n_head": model.config.n_head,
                        "block_size": model.config.block_size, "vocab_size": model.config.vocab_size,
                        "tokenizer": tokenizer.kind},
              "attention": attention}
    merges = tokens.Merges(tokenizer)
    result["merges"] = [merges.tree(t) for t in ids] if merges.is_bpe else None
    if config.focus is not None:
        position = attention_module.find_focus(entries, result["text"], config.focus)
        result["focus"] = {"position": position, "text": entries[position]["text"],
                           **attention_module.looked_at(attention, position, config.top_k)}
    lens_ids, lens_probs = lens.logit_lens(model, traced.residual, config.top_k)
    result["logit_lens"] = {"ids": lens_ids, "probs": lens_probs,
                            "layers": ["embedding"] + [f"after block {i}" for i in range(model.config.n_layer)]}
    next_ids, next_probs = lens.top_next(logits, config.top_k)
    temperature = config.temperature if config.temperature is not None else temperature
    result["next_token"] = {"ids": next_ids, "probs": next_probs, **lens.picks(logits, temperature, config.seed)}
    if with_embeddings:
        result["embeddings"] = embedding_section(model, tokenizer, ids, config, model_dir)
    result["vocab"] = vocabulary_texts(tokenizer, result)
    return result


def embedding_section(model, tokenizer, ids: list[int], config: ExplainConfig, model_dir: Path | None) -> dict:
    table = embeddings.embedding_table(model)
    allowed = allowed_ids(tokenizer, model.config.vocab_size)
    whole = whole_characters(tokenizer, allowed)  # a lone byte of a character means little as a neighbour or on a map
    distinct = list(dict.fromkeys(i for i in ids if i in set(allowed.tolist())))
    near = {str(i): embeddings.nearest(table, i, config.neighbours, whole) for i in distinct}
    frequent, source = embeddings.frequent_tokens(model_dir, whole, config.map_tokens) if model_dir else (
        whole[:config.map_tokens], "the lowest ids")
    coords, variance = embeddings.pca_map(table, frequent)
    return {"nearest": near, "map": {"ids": frequent, "xy": coords, "variance": variance, "source": source}}


def whole_characters(tokenizer, ids: np.ndarray) -> np.ndarray:
    """The ids whose pieces are whole UTF-8 text (not a fragment of a character split over tokens)."""
    def whole(token_id: int) -> bool:
        try:
            tokenizer.token_bytes(int(token_id)).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    kept = np.array([i for i in ids if whole(i)], dtype=np.int64)
    return kept if kept.size >= 2 else ids


def vocabulary_texts(tokenizer, result: dict) -> dict[str, str]:
    """The text of every token id the explanation names, so a reader needs no tokenizer."""
    named = {int(i) for i in np.asarray(result["logit_lens"]["ids"]).ravel()}
    named |= {int(i) for i in np.asarray(result["next_token"]["ids"]).ravel()}
    if "embeddings" in result:
        named |= {int(i) for i in np.asarray(result["embeddings"]["map"]["ids"]).ravel()}
        for near in result["embeddings"]["nearest"].values():
            named |= {n["id"] for n in near}
    for pick in ("greedy", "sampled"):
        if pick in result["next_token"]:
            named.add(result["next_token"][pick]["id"])
    named |= {t["id"] for t in result["tokens"]}
    return {str(i): tokens.token_text(tokenizer, i) for i in sorted(named) if i < tokenizer.vocab_size}


def explain_heads(model, tokenizer, model_dir: Path | None, config: ExplainConfig,
                  windows: np.ndarray | None = None) -> dict:
    """Head scores over held-out windows (from the model's tokens directory unless given) and the ranked table."""
    length = min(model.config.block_size, 128)
    if windows is None:
        if model_dir is None:
            raise UserError("measuring heads needs held-out tokens: give --data TOKENS_DIR")
        windows = heads.held_out_windows(model_dir, length, config.head_windows)
    scores = heads.score_heads(model, windows, allowed_ids(tokenizer, model.config.vocab_size), seed=config.seed)
    return {"scores": {k: scores[k] for k in ("previous", "first", "induction", "distance")},
            "baseline": scores["baseline"], "table": heads.head_table(scores),
            "windows": scores["windows"], "window_tokens": scores["window_tokens"],
            "repeat_half": scores["repeat_half"], "role_min": heads.ROLE_MIN,
            "role_over_baseline": heads.ROLE_OVER_BASELINE}


def jsonable(value, digits: int = 6):
    """The dict with numpy arrays as (rounded) lists, ready for json.dump."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), digits) if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, (float, np.floating)):
        return round(float(value), digits)
    if isinstance(value, np.integer):
        return int(value)
    return value
