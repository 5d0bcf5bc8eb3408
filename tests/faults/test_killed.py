"""A command killed with SIGKILL mid-write, then run again as it was: it recovers (a run resumes from its
checkpoint) and leaves no hidden temporary folder or lock behind. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stages import STAGES

from lmsmith.cli import main

LONGER = {"train": ["train.steps=100", "train.eval_every=100", "train.save_every=2"]}  # long enough to be caught


def started_writing(row, out: Path) -> bool:
    if row.in_place:
        return any((out / "checkpoints").glob("*/*")) if (out / "checkpoints").is_dir() else False
    return any(out.parent.glob(f".{out.name}.lmsmith-*.tmp"))


def run_until_writing(row, argv: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-m", "lmsmith", *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not started_writing(row, out):
            assert child.poll() is None, f"{row.name} ended before it could be killed"
            assert time.monotonic() < deadline, f"{row.name} wrote nothing in 60 s"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


@pytest.mark.parametrize("row", [r for r in STAGES if r.name in ("curate", "train")], ids=lambda r: r.name)
def test_the_same_command_after_a_sigkill_recovers_and_leaves_nothing_hidden(row, made, tmp_path, capsys):
    out = tmp_path / row.out_name
    argv = [*row.argv(made, out), *LONGER.get(row.name, [])]
    run_until_writing(row, argv, out)
    assert main([*argv, *row.rerun]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert (out / "manifest.json").is_file() and not (out / ".lock").exists()
