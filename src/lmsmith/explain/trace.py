"""One forward pass that keeps what the model computed along the way.

Every attention layer computes its weights in the open (`CausalSelfAttention.keep_weights`: the
same numbers the fused kernel would use) and forward hooks keep the residual stream after the
embedding and after each block. Nothing about the model changes: the logits are the usual ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lmsmith.model.transformer import GPT


@dataclass
class Trace:
    """What one forward pass over `ids` (B, T) computed."""

    logits: torch.Tensor  # (B, T, vocab)
    attention: list[torch.Tensor]  # per layer, (B, heads, T, T); row t is how position t spreads its attention
    residual: list[torch.Tensor]  # n_layer + 1 tensors (B, T, n_embd): after the embedding, after each block


@contextlib.contextmanager
def keeping_attention(model: GPT) -> Iterator[None]:
    """Make every attention layer keep its weights while inside; restore the fused kernel after."""
    layers = [block.attn for block in model.blocks]
    for attn in layers:
        attn.keep_weights = True
    try:
        yield
    finally:
        for attn in layers:
            attn.keep_weights, attn.weights = False, None


@torch.no_grad()
def trace(model: GPT, ids: torch.Tensor) -> Trace:
    """Run `model` on token ids (B, T), keeping attention weights and the residual stream."""
    residual: list[torch.Tensor] = []
    hooks = [model.blocks[0].register_forward_pre_hook(lambda _m, args: residual.append(args[0].detach()))]
    hooks += [block.register_forward_hook(lambda _m, _a, out: residual.append(out.detach())) for block in model.blocks]
    try:
        with keeping_attention(model):
            logits = model(ids).logits
            attention = [block.attn.weights.detach() for block in model.blocks]
    finally:
        for hook in hooks:
            hook.remove()
    return Trace(logits=logits.float(), attention=[a.float() for a in attention], residual=residual)
