"""Tiny outputs of every stage, made once per session, for the fault table to run each stage against."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from stages import STAGES, TINY_MODEL, TINY_TRAIN

from lmsmith.cli import main

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["textwrap.py", "string.py", "heapq.py", "shlex.py", "bisect.py", "colorsys.py"]


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> dict[str, Path]:
    """corpus/, data/ (curate), tokenizer/, tokens/ and run/ (train): the inputs every stage of the table reads."""
    root = tmp_path_factory.mktemp("made")
    corpus = root / "corpus"
    corpus.mkdir()
    for module in MODULES:
        shutil.copyfile(STDLIB / module, corpus / module)
    paths = {name: root / name for name in ("data", "tokenizer", "tokens", "run")}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread, and the two cores are shared
    try:
        assert main(["curate", str(corpus), "-o", str(paths["data"]), "--workers", "1", "--quiet",
                     "split.val_fraction=0.3"]) == 0
        assert main(["tokenizer", "train", str(paths["data"]), "-o", str(paths["tokenizer"]),
                     "tokenizer.vocab_size=300"]) == 0
        assert main(["tokenize", str(paths["data"]), "-t", str(paths["tokenizer"]), "-o", str(paths["tokens"])]) == 0
        assert main(["train", str(paths["tokens"]), "-o", str(paths["run"]), *TINY_MODEL, *TINY_TRAIN]) == 0
    finally:
        torch.set_num_threads(before)
    kv = root / "kv.jsonl"  # a fine-tuning set: sixteen keys, each with its number
    kv.write_text("".join(json.dumps({"prompt": f"key{i}=", "response": str(7 * i)}) + "\n" for i in range(16)))
    return {"corpus": corpus, "kv": kv, **paths}


@pytest.fixture(scope="session")
def outputs(made, tmp_path_factory) -> dict[str, Path]:
    """Each stage's output of its minimal command line, made once: what a rerun meets."""
    root = tmp_path_factory.mktemp("outputs")
    found = {}
    for row in STAGES:
        out = root / row.name / row.out_name
        out.parent.mkdir()
        assert main(row.argv(made, out)) == 0, row.name
        found[row.name] = out
    return found


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def make_read_only():
    """A function that makes a folder read-only for this process, even for root (a read-only bind mount);
    undone after the test. Skips where neither works."""
    mounted: list[Path] = []
    changed: list[Path] = []

    def read_only(folder: Path) -> None:
        if os.geteuid() != 0:
            for path in [folder, *folder.rglob("*")]:
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode & ~0o222)
                    changed.append(path)
            return
        if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,bind,ro", str(folder))):
            pytest.skip("cannot make a read-only folder here (root without mount permission)")
        mounted.append(folder)

    yield read_only
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)
    for path in changed:
        path.chmod(path.stat().st_mode | 0o200)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a file system of 8 KiB (a tmpfs mount, for root): every stage's output overflows it. Skips
    where it cannot be mounted."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=8k", "tmpfs", str(folder)):
        pytest.skip("cannot mount a tiny file system here (needs root)")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=False)
