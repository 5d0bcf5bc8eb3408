"""A run stopped by SIGTERM, then killed by SIGKILL, then resumed, ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread: same sums in every run


def start(recipe: Path, *extra: str) -> subprocess.Popen:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        ENV.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "lmsmith", "train", "--config", str(recipe), "--quiet", *extra],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_end(recipe: Path, *extra: str) -> None:
    process = start(recipe, *extra)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]


def last_logged_step(run: Path) -> int:
    steps = [0]
    if (run / "metrics.jsonl").is_file():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                steps.append(json.loads(line)["step"])
            except (json.JSONDecodeError, KeyError):
                pass
    return max(steps)


def interrupt_at(recipe: Path, run: Path, step: int, sig: signal.Signals, *extra: str) -> subprocess.Popen:
    """Start training and send `sig` as soon as step `step` has been logged."""
    process = start(recipe, *extra)
    deadline = time.monotonic() + 240
    while last_logged_step(run) < step:
        assert process.poll() is None, f"training ended before step {step}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(sig)
    process.communicate(timeout=240)
    return process


def training_lines(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields, which differ between any two runs."""
    clock = {"tokens_per_s", "mfu", "elapsed_s", "data_share"}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in clock} for line in lines]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_sigterm_then_sigkill_then_resume_is_bit_identical(tmp_path, recipe_file, optimizer):
    # dropout > 0 and bf16 autocast (on CPUs that have it): random masks and mixed precision must replay too
    settings = dict(optimizer=optimizer, precision="auto", steps=36)
    whole = recipe_file(tmp_path / "whole", **settings)
    broken = recipe_file(tmp_path / "broken", **settings)
    run = tmp_path / "broken"

    run_to_end(whole)

    # SIGTERM: the run saves a checkpoint at the end of the step and exits with 130.
    stopped = interrupt_at(broken, run, 5, signal.SIGTERM)
    assert stopped.returncode == 130
    saved = [p.name for p in (run / "checkpoints").iterdir()]
    assert len(saved) == 1 and int(saved[0].split("-")[1]) >= 5  # not a save_every step: the signal's own checkpoint

    # SIGKILL between checkpoints (save_every=8): nothing is saved, the resumed run redoes the lost steps.
    killed = interrupt_at(broken, run, 19, signal.SIGKILL, "--resume", "auto")
    assert killed.returncode == -signal.SIGKILL
    assert last_logged_step(run) >= 19

    run_to_end(broken, "--resume", "auto")

    expected = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    got = load_file(run / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    lines = training_lines(run)
    assert lines == training_lines(tmp_path / "whole")  # every loss, lr and grad norm, step by step
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == 36 and losses[-1] < losses[0] - 0.5  # it trained: equality is not of untouched weights
