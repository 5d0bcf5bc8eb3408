"""Tiny tokenizers and models for the fine-tuning tests: everything built here, nothing downloaded."""

from __future__ import annotations

import string

import pytest
import torch

from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import Tokenizer, train_char

ALPHABET = string.ascii_letters + string.digits + " .,:;?!'\"-_=*()<>#\n"


@pytest.fixture(scope="session")
def char_tokenizer() -> Tokenizer:
    return train_char([ALPHABET], show_progress=False)


def tiny_model(vocab_size: int, seed: int = 0, **shape) -> GPT:
    """A two-block model whose weights are all off their initial values, so a lost tensor shows."""
    settings = dict(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)
    settings.update(shape)
    torch.manual_seed(seed)
    model = GPT(ModelConfig(**settings)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.fixture(scope="session")
def make_model():
    """`make_model(vocab_size, seed=0, **shape)`: a fresh tiny model."""
    return tiny_model


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):
    """Every fine-tuning test trains a tiny model (one_thread is in tests/conftest.py)."""


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, char_tokenizer):
    """A saved tiny model (random weights) to fine-tune from."""
    from lmsmith.model.directory import save_model_dir

    path = tmp_path_factory.mktemp("base") / "model"
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=char_tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=64))
    return save_model_dir(path, model, char_tokenizer, made_by="test")


def key_value_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` random three-letter keys, each with a random three-digit value: a lookup table to learn."""
    import random

    rng = random.Random(seed)
    keys: set[str] = set()
    while len(keys) < n:
        keys.add("".join(rng.choice(string.ascii_lowercase) for _ in range(3)))
    return [{"prompt": f"{k}=", "response": "".join(rng.choice(string.digits) for _ in range(3))} for k in sorted(keys)]


@pytest.fixture(scope="session")
def kv_file(tmp_path_factory):
    import json

    path = tmp_path_factory.mktemp("data") / "kv.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in key_value_pairs(32)), encoding="utf-8")
    return path
