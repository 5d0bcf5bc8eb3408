"""The tiny model and the names the serving tests share (the fixtures in conftest.py build on them)."""

from __future__ import annotations

import string

import torch

from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig

ALPHABET = string.ascii_letters + string.digits + " .,:;?!'\"-_=*()<>#|\n"
BLOCK_SIZE = 128
KEY = "test-key-0123456789"
NAME = "support"


def tiny_model(vocab_size: int, seed: int = 0, **shape) -> GPT:
    """A two-block model with weights off their initial values, so its outputs vary with the input."""
    settings = dict(vocab_size=vocab_size, block_size=BLOCK_SIZE, n_layer=2, n_head=2, n_embd=32)
    settings.update(shape)
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**settings)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model
