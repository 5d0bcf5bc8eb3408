"""Which earlier tokens a chosen token looks at, head by head.

Row t of a head's attention pattern is a probability distribution over positions 0..t: how much
of what the head passes on to position t comes from each earlier token. For a focus token we
rank the earlier positions by that weight, for every head and averaged over all heads.
"""

from __future__ import annotations

import numpy as np

from lmsmith.core.errors import UserError


def find_focus(tokens: list[dict], text: str, focus: str) -> int:
    """The position of the focus token: the last token whose text is `focus` (spaces around it ignored),
    else the token holding the last character of the last place `focus` occurs in the text."""
    wanted = focus.strip()
    if not wanted:
        raise UserError("--focus is empty: name a word of the text, e.g. --focus her")
    for exact in (True, False):
        for token in reversed(tokens):
            piece = token["text"].strip()
            if piece == wanted if exact else piece.lower() == wanted.lower():
                return token["position"]
    at = text.rfind(wanted)
    if at >= 0:
        last_char = len(text[:at + len(wanted)].encode("utf-8")) - 1
        end = 0
        for token in tokens:
            end += token["n_bytes"]
            if end > last_char:
                return token["position"]
    shown = ", ".join(repr(t["text"]) for t in tokens[:40]) + (" ..." if len(tokens) > 40 else "")
    raise UserError(f"--focus {focus!r} is not a token of the text: choose one of {shown}")


def looked_at(attention: np.ndarray, position: int, top: int) -> dict:
    """For the token at `position`: per head, the earlier positions ranked by attention weight.

    attention: (layers, heads, T, T). Returns {"per_head": [{layer, head, self, earlier: [{position,
    weight}]}], "all_heads": [{position, weight}]}; the weight on the token itself is given apart.
    """
    layers, heads = attention.shape[:2]
    row = attention[:, :, position, :position + 1]  # (layers, heads, position + 1)
    per_head = []
    for layer in range(layers):
        for head in range(heads):
            per_head.append({"layer": layer, "head": head, "self": float(row[layer, head, position]),
                             "earlier": _ranked(row[layer, head, :position], top)})
    return {"per_head": per_head, "all_heads": _ranked(row.mean(axis=(0, 1))[:position], top)}


def _ranked(weights: np.ndarray, top: int) -> list[dict]:
    order = np.argsort(-weights, kind="stable")[:top]
    return [{"position": int(p), "weight": float(weights[p])} for p in order]
