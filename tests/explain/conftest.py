"""Tiny models and a tokenizer for the explain tests, built here: nothing is downloaded."""

from __future__ import annotations

import pytest
from explain_models import GPT2, LLAMA, STDLIB, random_model

from lmsmith.model.directory import save_model_dir
from lmsmith.text.tokenizer import TextFiles, train_bpe


@pytest.fixture(scope="session")
def tokenizer():
    return train_bpe(TextFiles([STDLIB / "textwrap.py"]), vocab_size=400, show_progress=False)


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tokenizer):
    return random_model(tokenizer.vocab_size, **(GPT2 if request.param == "gpt2" else LLAMA))


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    """A run-like directory: RUN/model with weights, config and tokenizer."""
    path = tmp_path / "run" / "model"
    save_model_dir(path, random_model(tokenizer.vocab_size, **GPT2), tokenizer, made_by="init")
    return path
