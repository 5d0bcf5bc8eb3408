"""The progress bar of a training run: step, loss, learning rate, tokens/s, MFU and time left."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lmsmith.core.progress import progress_bar


class TrainProgress:
    """A rich bar on stderr; without a terminal (a log file) or with quiet, plain lines now and then."""

    def __init__(self, total_steps: int, start_step: int, quiet: bool):
        self.quiet = quiet
        self.bar = progress_bar(
            TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  "
                       "{task.fields[rate]} tok/s  MFU {task.fields[mfu]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            quiet=quiet, transient=False,
        )
        self.console = self.bar.console
        self.task = self.bar.add_task("train", total=total_steps, completed=start_step,
                                      loss="-", lr="-", rate="-", mfu="-")

    def __enter__(self) -> TrainProgress:
        self.bar.start()
        return self

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float, mfu: float, log_line: bool) -> None:
        fields = dict(loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{tokens_per_s:,.0f}", mfu=f"{100 * mfu:.1f}%")
        self.bar.update(self.task, completed=step, **fields)
        if self.bar.disable and log_line and not self.quiet:
            self.console.print(f"step {step}: loss {fields['loss']}  lr {fields['lr']}  "
                               f"{fields['rate']} tok/s  MFU {fields['mfu']}")

    def set_total(self, total_steps: int) -> None:
        """A time budget has planned the run's length."""
        self.bar.update(self.task, total=total_steps)

    def print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def __exit__(self, *exc) -> None:
        self.bar.stop()
