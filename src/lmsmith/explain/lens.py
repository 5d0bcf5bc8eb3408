"""Layers refine a guess (the logit lens), and the guess itself (the next-token probabilities).

The residual stream is the running sum every block adds to. Reading it out early, through the
same final norm and output head the model uses at the end, gives the guess the model would
make if it stopped after that layer; after the last block it is the model's real output.
"""

from __future__ import annotations

import numpy as np
import torch

from lmsmith.model.transformer import GPT


@torch.no_grad()
def logit_lens(model: GPT, residual: list[torch.Tensor], top: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`top` token ids and probabilities at every layer and position: two (n_layer + 1, T, top) arrays.

    residual: the n_layer + 1 tensors (1, T, n_embd) of a trace (row 0: the embedding, before any block).
    """
    ids, probs = [], []
    for stream in residual:
        logits = model.head(model.norm(stream[0])).double()
        p, i = logits.softmax(dim=-1).topk(min(top, logits.size(-1)), dim=-1)
        ids.append(i.cpu().numpy())
        probs.append(p.cpu().numpy())
    return np.stack(ids), np.stack(probs)


def top_next(logits: torch.Tensor, top: int, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Top-`top` next-token ids and probabilities at every position of logits (T, vocab)."""
    scaled = logits.double() / temperature if temperature > 0 else logits.double()
    p, i = scaled.softmax(dim=-1).topk(min(top, logits.size(-1)), dim=-1)
    return i.cpu().numpy(), p.cpu().numpy()


def picks(logits: torch.Tensor, temperature: float, seed: int) -> dict:
    """The token the model picks after the last position: greedy (temperature 0), and one sampled at
    `temperature` with `seed` (the same sampling `lmsmith generate` does, without top-k or top-p)."""
    last = logits[-1].double()
    greedy = int(last.argmax())
    out = {"greedy": {"id": greedy, "probability": float(last.softmax(-1)[greedy])}, "temperature": temperature}
    if temperature > 0:
        p = (last / temperature).softmax(-1)
        generator = torch.Generator().manual_seed(seed)
        sampled = int(torch.multinomial(p.cpu(), 1, generator=generator))
        out["sampled"] = {"id": sampled, "probability": float(p[sampled]), "seed": seed}
    return out
