"""The one progress bar every stage uses: a rich bar on stderr, shown only where a person watches.

With `quiet`, or when stderr is not a terminal (a log file, CI, a pipe), the bar is disabled: rich
would otherwise leave blank lines and half-drawn bars in the log. A disabled bar still accepts
every call (start, add_task, advance, update, stop), so a stage never asks whether one is shown;
`bar.disable` says so for the one that prints plain lines instead (training's log lines).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress, ProgressColumn


def progress_bar(*columns: str | ProgressColumn, quiet: bool, transient: bool = True) -> Progress:
    """A bar with `columns`, on stderr; disabled with `quiet` or without a terminal."""
    console = Console(stderr=True, highlight=False)
    return Progress(*columns, console=console, transient=transient, disable=quiet or not console.is_terminal)
