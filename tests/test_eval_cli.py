"""`lmsmith eval`: the whole split, scored exactly as `evaluate_tokens` scores it; mismatches refused."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
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


def test_text_files_are_scored_as_one_stream_of_documents(setup, tmp_path, capsys):
    root, model, tokenizer = setup
    docs = [tmp_path / "a.py", tmp_path / "b.py"]
    docs[0].write_text("def add(a, b):\n    return a + b\n" * 5)
    docs[1].write_text("class Point:\n    x = 0\n    y = 0\n" * 5)
    (tmp_path / "__init__.py").write_text("")  # an empty file, as packages hold: it adds no document
    got = run_json(capsys, root / "run", "--text", docs[0], tmp_path / "__init__.py", docs[1], "--context", 16,
                   "--stride", 8)
    # The reference: tokenize's stream (doc0 <eot> doc1), scored by the same function.
    ids = tokenizer.encode(docs[0].read_text()) + [tokenizer.eot_id] + tokenizer.encode(docs[1].read_text())
    expected = evaluate_tokens(model, np.array(ids), token_byte_lengths(tokenizer), context=16, stride=8)
    assert got["split"] == "text" and got["tokens"] == len(ids) - 1
    assert got["loss"] == pytest.approx(expected.loss, rel=1e-6)
    first = len(tokenizer.token_bytes(ids[0]))  # the first token is only context: never scored
    assert got["bytes"] == sum(len(d.read_bytes()) for d in docs) - first == expected.bytes


def test_the_compressors_score_the_same_bytes_as_the_model(setup, tmp_path, capsys):
    import bz2
    import gzip
    import lzma

    root, _, _ = setup
    doc = tmp_path / "doc.py"
    doc.write_text((STDLIB / "textwrap.py").read_text())
    got = run_json(capsys, root / "run", "--text", doc)
    data = doc.read_bytes()  # the compressors get every byte, the first token's included
    expected = {"gzip -9": gzip.compress(data, 9, mtime=0), "bzip2 -9": bz2.compress(data, 9),
                "xz -9e": lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)}
    for name, packed in expected.items():
        assert got["compressors"][name] == pytest.approx(8 * len(packed) / len(data))
    # Python source compresses: every compressor beats 8 bits a byte, and xz beats gzip.
    assert got["compressors"]["xz -9e"] < got["compressors"]["gzip -9"] < 8


def test_the_table_ranks_the_model_among_the_compressors(setup, capsys):
    root, _, _ = setup
    assert main(["eval", str(root / "run"), "--split", "val"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("bits per byte on the same")]
    assert len(line) == 1 and all(name in line[0] for name in ("gzip -9", "bzip2 -9", "xz -9e", "this model"))


def test_text_and_data_together_are_refused(setup, tmp_path, capsys):
    root, _, _ = setup
    doc = tmp_path / "doc.py"
    doc.write_text("x = 1\n" * 20)
    assert main(["eval", str(root / "run"), "--data", str(root / "tokens"), "--text", str(doc)]) == 2
    err = capsys.readouterr().err
    assert "both --data and --text" in err and len(err.strip().splitlines()) == 1
