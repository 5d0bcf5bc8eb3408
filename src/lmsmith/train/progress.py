"""The progress bar of a training run: step, loss, learning rate, tokens/s, MFU and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """A rich bar on stderr; without a terminal (a log file) or with quiet, plain lines now and then."""

    def __init__(self, total_steps: int, start_step: int, quiet: bool):
        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.bar = None
        if not quiet and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} tok/s  MFU {task.fields[mfu]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.task = self.bar.add_task("train", total=total_steps, completed=start_step,
                                          loss="-", lr="-", rate="-", mfu="-")

    def __enter__(self) -> TrainProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float, mfu: float, log_line: bool) -> None:
        fields = dict(loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{tokens_per_s:,.0f}", mfu=f"{100 * mfu:.1f}%")
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **fields)
        elif log_line and not self.quiet:
            self.console.print(f"step {step}: loss {fields['loss']}  lr {fields['lr']}  {fields['rate']} tok/s  MFU {fields['mfu']}")

    def print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
