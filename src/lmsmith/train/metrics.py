"""Where training numbers go: RUN/metrics.jsonl always, TensorBoard and Weights & Biases if asked.

Each line of metrics.jsonl is one JSON object with a `step`: training lines carry loss, lr,
grad_norm, tokens, epoch, tokens_per_s, mfu; evaluation lines carry val_loss and val_perplexity.
On resume, lines after the checkpoint's step are dropped (those steps are about to be redone), so
the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lmsmith.core.atomic import write_text
from lmsmith.core.extras import require

METRICS = "metrics.jsonl"


def truncate_after(path: Path, step: int) -> None:
    """Keep only the lines of metrics.jsonl up to and including `step`."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        # Only lines of ours survive a resume: garbage would stop every later reader of the file.
        number = record.get("step", 0) if isinstance(record, dict) else None
        if isinstance(number, (int, float)) and not isinstance(number, bool) and number <= step:
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else str(value)


class MetricsLog:
    """Appends metric records to every sink that is switched on; only rank 0 makes one."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, wandb: bool = False,
                 wandb_project: str = "lmsmith", config: dict | None = None):
        self.file = open(run_dir / METRICS, "a", encoding="utf-8")
        self.tensorboard = _tensorboard_writer(run_dir) if tensorboard else None
        self.wandb = _wandb_run(run_dir, wandb_project, config) if wandb else None

    def log(self, record: dict) -> None:
        # Written and flushed line by line: a run killed at any moment leaves every finished line.
        self.file.write(json.dumps({k: _finite(v) for k, v in record.items()}) + "\n")
        self.file.flush()
        step = record["step"]
        numbers = {k: v for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def require_extras(tensorboard: bool, wandb: bool) -> None:
    """Refuse, before any work, logging to a service whose package is not installed."""
    if tensorboard:
        _import_tensorboard()
    if wandb:
        _import_wandb()


def _import_tensorboard():
    return require("torch.utils.tensorboard", extra="tensorboard", purpose="train.tensorboard=true",
                   package="tensorboard").SummaryWriter


def _import_wandb():
    return require("wandb", extra="wandb", purpose="train.wandb=true", also=" (and `wandb login`)")


def _tensorboard_writer(run_dir: Path):
    return _import_tensorboard()(log_dir=str(run_dir / "tensorboard"))


def _wandb_run(run_dir: Path, project: str, config: dict | None):
    return _import_wandb().init(project=project, name=run_dir.name, dir=str(run_dir), config=config or {},
                                resume="allow")
