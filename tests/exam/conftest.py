"""Tiny models and task files for the exam tests: everything built here in seconds, nothing downloaded."""

from __future__ import annotations

import json
import sqlite3
import string
from pathlib import Path

import pytest
import torch

from lmsmith.model.decoding import generate
from lmsmith.model.directory import load_model_dir, save_model_dir
from lmsmith.model.transformer import GPT
from lmsmith.schema.generate import GenerationConfig
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import Tokenizer, train_char

ALPHABET = string.ascii_letters + string.digits + " .,:;?!'\"-_=*()<>#|+[]{}\n"


@pytest.fixture(scope="session")
def char_tokenizer() -> Tokenizer:
    return train_char([ALPHABET], show_progress=False)


def tiny_model(vocab_size: int, seed: int = 0) -> GPT:
    """A two-block model with weights off their initial values, so its outputs vary with the input."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, char_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("exam") / "model"
    return save_model_dir(path, tiny_model(char_tokenizer.vocab_size), char_tokenizer, made_by="test")


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("exam") / "other"
    return save_model_dir(path, tiny_model(char_tokenizer.vocab_size, seed=1), char_tokenizer, made_by="test")


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows as JSONL; a text row is written as it is (a malformed line)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tiny_db(folder: Path) -> Path:
    """tiny.sqlite: one table t(x) holding 1 and 2, for SQL items."""
    db = folder / "tiny.sqlite"
    with sqlite3.connect(db) as c:
        c.executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
    c.close()
    return db


def greedy(model_dir, prompt: str, tokens: int = 6) -> str:
    """The model's answer from `generate`, not the exam's batched decoder: an independent computation."""
    model, tokenizer = load_model_dir(model_dir)
    return generate(model, tokenizer, prompt, GenerationConfig(max_new_tokens=tokens, temperature=0))[0]


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):
    """Tiny models run fastest on one thread, and the CPU is shared."""
