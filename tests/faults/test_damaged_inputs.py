"""Inputs made by an earlier stage, then damaged or mismatched, and sizes no machine holds: one line naming the
file or the setting, exit code 2, before any work (and quickly: none of these may hang)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from stages import TINY_MODEL, TINY_TRAIN

from lmsmith.cli import main


def refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_parquet_shard_in_tokenize_names_the_shard(made, tmp_path, capsys, damage):
    data = tmp_path / "data"
    shutil.copytree(made["data"], data)
    shard = sorted((data / "train").glob("*.parquet"))[0]
    if damage == "garbage":
        shard.write_bytes(b"not parquet at all" * 10)
    else:
        shard.write_bytes(shard.read_bytes()[:200])
    err = refused(["tokenize", str(data), "-t", str(made["tokenizer"]), "-o", str(tmp_path / "tokens")], capsys)
    assert f"{shard} is not a readable Parquet shard" in err


def test_an_unreadable_token_shard_in_train_names_the_shard(made, tmp_path, capsys, monkeypatch):
    real_memmap = np.memmap

    def denied(filename, *args, **kwargs):  # root reads anything, so permission is denied here instead
        if "shard-" in str(filename):
            raise PermissionError(13, "Permission denied", str(filename))
        return real_memmap(filename, *args, **kwargs)

    monkeypatch.setattr(np, "memmap", denied)
    err = refused(["train", str(made["tokens"]), "-o", str(tmp_path / "run"), *TINY_MODEL, *TINY_TRAIN], capsys)
    assert "cannot read" in err and "shard-" in err and "permission denied" in err


def test_token_ids_beyond_the_vocabulary_in_train_are_one_line(made, tmp_path, capsys):
    tokens = tmp_path / "tokens"
    shutil.copytree(made["tokens"], tokens)
    for shard in tokens.glob("*/shard-*.bin"):
        ids = np.fromfile(shard, dtype="<u2")
        ids[:] = 299 + 1000  # past the vocabulary of 300
        ids.tofile(shard)
    err = refused(["train", str(tokens), "-o", str(tmp_path / "run"), *TINY_MODEL, *TINY_TRAIN], capsys)
    assert "beyond its vocabulary of 300" in err


@pytest.mark.parametrize("argv, words", [
    (["train", "{tokens}", "-o", "{out}", *TINY_MODEL, *TINY_TRAIN, "model.n_layer=1000000"], "training needs about"),
    (["init", "--tokenizer", "{tokenizer}", "-o", "{out}", "model.vocab_size=100000000000"], "needs about"),
    (["init", "--tokenizer", "{tokenizer}", "-o", "{out}", "model.n_embd=10000000"], "needs about"),
], ids=["train n_layer 10^6", "init vocab_size 10^11", "init n_embd 10^7"])
def test_a_model_no_machine_holds_is_refused_by_arithmetic_and_quickly(made, tmp_path, capsys, argv, words):
    argv = [a.format(tokens=made["tokens"], tokenizer=made["tokenizer"], out=tmp_path / "out") for a in argv]
    started = time.perf_counter()
    assert words in refused(argv, capsys)
    assert time.perf_counter() - started < 20 and not (tmp_path / "out").exists()


def test_explain_heads_with_tokens_of_another_tokenizer_is_one_line(made, tmp_path, capsys):
    other = tmp_path / "other-tokenizer"
    assert main(["tokenizer", "train", str(made["data"]), "-o", str(other), "tokenizer.vocab_size=280"]) == 0
    tokens = tmp_path / "other-tokens"
    assert main(["tokenize", str(made["data"]), "-t", str(other), "-o", str(tokens)]) == 0
    err = refused(["explain", str(made["run"]), "--heads", "--data", str(tokens), "-o", str(tmp_path / "out")],
                  capsys)
    assert "made by another tokenizer than the model's" in err


def test_eval_of_a_run_trained_with_relative_paths_works_from_another_folder(made, tmp_path, capsys, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(made["tokens"], work / "tokens")
    monkeypatch.chdir(work)
    assert main(["train", "tokens", "-o", "runs/tiny", *TINY_MODEL, *TINY_TRAIN]) == 0
    (work / "runs" / "tiny" / "manifest.json").write_text(  # as an older lmsmith recorded it: the path as typed
        (work / "runs" / "tiny" / "manifest.json").read_text().replace(str(work / "tokens"), "tokens"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(work / "runs" / "tiny"), "-o", str(tmp_path / "eval"), "--split", "val"]) == 0, \
        capsys.readouterr().err


def test_an_unreadable_or_dangling_input_is_named_not_no_document_survived(tmp_path, capsys, monkeypatch):
    import os

    link = tmp_path / "gone.txt"
    link.symlink_to(tmp_path / "nowhere.txt")
    assert "gone.txt is a link to nothing" in refused(["curate", str(link), "-o", str(tmp_path / "a")], capsys)
    text = tmp_path / "secret.txt"
    text.write_text("some text\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(text) else real_access(p, mode))
    err = refused(["curate", str(text), "-o", str(tmp_path / "b")], capsys)
    assert f"{text} cannot be read (permission denied)" in err
