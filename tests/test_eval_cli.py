"""`lmsmith eval`: the whole split, scored exactly as `evaluate_tokens` scores it; mismatches refused."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch

from lmsmith.cli import main
from lmsmith.model.directory import save_model_dir
from lmsmith.model.scoring import evaluate_tokens, token_byte_lengths
from lmsmith.model.transformer import GPT
from lmsmith.schema.model import ModelConfig
from lmsmith.text.tokenizer import TextFiles, load_tokenizer, train_bpe
from lmsmith.text.tokens_dir import open_tokens_dir, read_split, tokenize_corpus

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TEXT_FILES = [STDLIB / "textwrap.py", STDLIB / "json" / "decoder.py"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    train_bpe(TextFiles(TEXT_FILES), vocab_size=300, show_progress=False).save(root / "tok")
    tokenize_corpus([str(p) for p in TEXT_FILES], root / "tok", root / "tokens", val_fraction=0.2, quiet=True)
    tokenizer = load_tokenizer(root / "tok")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    # As training exports it: the model directory records the tokens it learned from.
    save_model_dir(root / "run" / "model", model, tokenizer, made_by="test",
                   inputs={"tokens": {"path": str(root / "tokens")}})
    return root, model, tokenizer


def run_json(capsys, *argv) -> dict:
    assert main(["eval", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_equals_evaluate_tokens_on_the_whole_split(setup, capsys):
    root, model, tokenizer = setup
    got = run_json(
        capsys, root / "run" / "model", "--data", root / "tokens", "--split", "val", "--context", 16, "--stride", 8
    )
    ids = read_split(open_tokens_dir(root / "tokens"), "val")
    expected = evaluate_tokens(model, ids, token_byte_lengths(tokenizer), context=16, stride=8)
    assert got["tokens"] == len(ids) - 1 == expected.tokens  # every token of the split but the first
    assert got["loss"] == pytest.approx(expected.loss, rel=1e-6)
    assert got["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-6)
    assert got["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    assert (got["context"], got["stride"], got["split"]) == (16, 8, "val")


def test_a_run_directory_finds_its_model_and_tokens(setup, capsys):
    root, model, tokenizer = setup
    got = run_json(capsys, root / "run", "--split", "val")  # no --data: the tokens the model names
    ids = read_split(open_tokens_dir(root / "tokens"), "val")
    expected = evaluate_tokens(model, ids, token_byte_lengths(tokenizer))  # context block_size, stride half
    assert (got["context"], got["stride"]) == (32, 16)
    assert got["loss"] == pytest.approx(expected.loss, rel=1e-6)
    assert got["data"] == str(root / "tokens")


def test_the_table_shows_the_scores(setup, capsys):
    root, _, _ = setup
    assert main(["eval", str(root / "run"), "--split", "val", "--quiet"]) == 0
    out = capsys.readouterr().out
    for word in ("perplexity", "bits per byte", "val split"):
        assert word in out


def test_tokens_of_another_tokenizer_are_refused(setup, tmp_path, capsys):
    root, _, _ = setup
    other = train_bpe(TextFiles(TEXT_FILES), vocab_size=290, show_progress=False)
    other.save(tmp_path / "tok")
    tokenize_corpus([str(p) for p in TEXT_FILES], tmp_path / "tok", tmp_path / "tokens", quiet=True)
    assert main(["eval", str(root / "run"), "--data", str(tmp_path / "tokens"), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "another tokenizer" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--split", "test"], "holds 0 tokens"),  # plain text files are split into train and val only
    (["--split", "val", "--context", "8", "--stride", "9"],
     "eval.stride (--stride) (9) cannot be longer than eval.context (--context) (8)"),
    (["--split", "val", "--context", "64"], "longer than the model's block_size"),
    (["--split", "val", "--batch-size", "0"], "eval.batch_size (--batch-size) must be at least 1"),
])
def test_bad_requests_are_one_line_each(setup, capsys, argv, message):
    root, _, _ = setup
    assert main(["eval", str(root / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_model_or_tokens_directory_is_named(setup, tmp_path, capsys):
    root, _, _ = setup
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(root / "run"), "--data", str(root / "tok")]) == 2
    err = capsys.readouterr().err
    assert "has no manifest.json" in err and "lmsmith tokenize" in err
