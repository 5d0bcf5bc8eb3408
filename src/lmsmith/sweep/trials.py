"""One trial of a sweep: a child `lmsmith train` whose metrics.jsonl is followed as it grows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmsmith.train.metrics import METRICS


class TrialFailed(Exception):
    """A trial whose recipe did not fit or whose training stopped with an error; the sweep goes on."""


@dataclass
class TrialOutcome:
    val_losses: list[tuple[int, float]]  # (step, validation loss), in order
    seconds: float
    last_train: dict  # the last training line of metrics.jsonl
    stopped: str | None = None  # why the trial was stopped early: "pruned" or "budget"

    @property
    def best(self) -> float:
        return min(loss for _, loss in self.val_losses)


class MetricsFollower:
    """Reads the lines a running training adds to its metrics.jsonl."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = ""

    def new_records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        text = self.partial + text
        lines = text.split("\n")
        self.partial = lines.pop()  # a line still being written
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return records


def run_trial(recipe_file: Path, run_dir: Path, log_file: Path, on_val_loss: Callable[[int, float], bool],
              deadline: float | None, poll_seconds: float = 0.2) -> TrialOutcome:
    """Train `recipe_file` in a child process; stop it when `on_val_loss` says so or at the deadline."""
    follower = MetricsFollower(run_dir / METRICS)
    outcome = TrialOutcome([], 0.0, {})
    started = time.perf_counter()
    command = [sys.executable, "-m", "lmsmith", "train", "--config", str(recipe_file), "--quiet"]
    with open(log_file, "w", encoding="utf-8") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            while True:
                finished = child.poll() is not None
                for record in follower.new_records():
                    if "val_loss" in record and isinstance(record["val_loss"], (int, float)):
                        outcome.val_losses.append((record["step"], float(record["val_loss"])))
                        if (
                            outcome.stopped is None
                            and not finished
                            and on_val_loss(record["step"], float(record["val_loss"]))
                        ):
                            outcome.stopped = "pruned"
                    elif "loss" in record:
                        outcome.last_train = record
                if outcome.stopped is None and deadline is not None and time.time() > deadline and not finished:
                    outcome.stopped = "budget"
                if finished:
                    break
                if outcome.stopped is not None:
                    stop_child(child)
                    continue  # read what it wrote before it stopped
                time.sleep(poll_seconds)
        finally:
            if child.poll() is None:  # Ctrl-C or an error here: never leave a training behind
                stop_child(child)
    outcome.seconds = time.perf_counter() - started
    if outcome.stopped is None and child.returncode != 0:
        raise TrialFailed(last_error_line(log_file, child.returncode))
    if not outcome.val_losses and outcome.stopped is None:
        raise TrialFailed(f"training wrote no validation loss to {run_dir / METRICS}")
    return outcome


def stop_child(child: subprocess.Popen, grace_seconds: float = 30.0) -> None:
    """SIGTERM (training checkpoints and stops at the end of its step), then SIGKILL if it hangs."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def last_error_line(log_file: Path, returncode: int) -> str:
    text = log_file.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"training exited with code {returncode}: {detail} (log: {log_file})"


def tidy_trial_run(run_dir: Path) -> None:
    """Keep a trial's metrics, config and best model; its checkpoints were only for resuming."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "model", ignore_errors=True)
