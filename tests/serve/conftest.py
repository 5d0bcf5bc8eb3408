"""Tiny models for the serving tests: built here in seconds, nothing downloaded."""

from __future__ import annotations

import json

import pytest
import torch
from serve_models import ALPHABET, KEY, NAME, tiny_model

from lmsmith.model.directory import save_model_dir
from lmsmith.text.tokenizer import Tokenizer, train_char


@pytest.fixture(scope="session")
def char_tokenizer() -> Tokenizer:
    return train_char([ALPHABET], show_progress=False)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, char_tokenizer):
    """A saved tiny model with random weights and no chat template."""
    path = tmp_path_factory.mktemp("serve") / "model"
    return save_model_dir(path, tiny_model(char_tokenizer.vocab_size), char_tokenizer, made_by="test")


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory, model_dir):
    """The tiny model after two steps of instruction tuning with the chatml template: it carries the template."""
    from lmsmith.cli import main

    work = tmp_path_factory.mktemp("chat")
    data = work / "chat.jsonl"
    pairs = [{"prompt": f"{a}+{b}=", "response": str(a + b)} for a in range(6) for b in range(6)]
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["finetune", str(model_dir), "--data", str(data), "-o", str(work / "run"), "--quiet",
                     "--template", "chatml", "train.steps=2", "train.eval_every=2", "train.micro_batch=8",
                     "train.peak_flops=1e11", "exact_match=0"]) == 0
    finally:
        torch.set_num_threads(before)
    return work / "run" / "model"





@pytest.fixture(scope="session")
def server(chat_model_dir, tmp_path_factory):
    """`lmsmith serve` of the chat model, with an API key and --log-text, shared by every serving test."""
    from serving import ServerProcess

    work = tmp_path_factory.mktemp("server")
    key_file = work / "key.txt"
    key_file.write_text(KEY + "\n")
    process = ServerProcess(chat_model_dir, "--api-key-file", str(key_file), "--max-batch", "32", "--threads", "1",
                            "--model-name", NAME, "--log-text", log_file=work / "server.log")
    yield process
    assert process.stop() == 0
    assert "Traceback" not in process.log()
