"""Shared, built-once inputs for the training tests: a small tokenizer and token shards of real text.

The text is a few modules of the Python standard library (about 180 KB of code and docstrings),
so nothing is downloaded and every machine has it.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import yaml

from lmsmith.text.tokenizer import TextFiles, train_bpe
from lmsmith.text.tokens_dir import tokenize_corpus

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS_FILES = [STDLIB / "textwrap.py", STDLIB / "argparse.py", *sorted((STDLIB / "json").glob("*.py"))]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    train_bpe(TextFiles(CORPUS_FILES), vocab_size=512, show_progress=False).save(out)
    return out


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """About 60k training and 7k validation tokens (the last tenth of the text)."""
    out = tmp_path_factory.mktemp("tokens") / "tokens"
    tokenize_corpus([str(p) for p in CORPUS_FILES], tokenizer_dir, out, quiet=True)
    return out


@pytest.fixture
def tiny_recipe(tokens_dir):
    """A recipe maker: a plain dict for a model of a few thousand parameters that takes milliseconds a step."""
    return lambda out, **train: _tiny_recipe(tokens_dir, out, **train)


def _tiny_recipe(tokens: Path, out: Path, **train) -> dict:
    return {
        "data": str(tokens),
        "out": str(out),
        "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.1},
        "train": {"steps": 40, "batch_tokens": 256, "micro_batch": 4, "lr": 3e-3, "warmup_steps": 5,
                  "eval_every": 10, "eval_batches": 4, "save_every": 8, "keep_last": 2, "log_every": 1,
                  "peak_flops": 1e11, **train},
    }


@pytest.fixture
def recipe_file(tiny_recipe):
    """Write a tiny recipe (with train overrides) next to its run directory; returns the YAML path."""

    def write(out: Path, **train) -> Path:
        path = out.with_name(out.name + ".yaml")
        path.write_text(yaml.safe_dump(tiny_recipe(out, **train)))
        return path

    return write
