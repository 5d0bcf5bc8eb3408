"""Model shapes and random models for the explain tests (the fixtures in conftest.py build on them)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch

from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig

STDLIB = Path(sysconfig.get_paths()["stdlib"])

# Two layouts: GPT-2 (layernorm, learned positions, gelu, biases) and Llama (rmsnorm, rope, swiglu, grouped KV heads).
GPT2 = dict(n_layer=2, n_head=2, n_embd=32, block_size=24, norm="layernorm", position="learned",
            feed_forward="gelu", bias=True, tie_embeddings=True)
LLAMA = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=24, norm="rmsnorm", position="rope",
             feed_forward="swiglu", bias=False, tie_embeddings=False)



def random_model(vocab_size: int, seed: int = 0, **shape) -> GPT:
    """A model with random weights, biases and norm gains included, so every term of the computation counts."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=vocab_size, dropout=0.0, **shape))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.mul_(20.0)  # sharper than initialisation: attention far from uniform
    return model.eval()
