"""Counts as people read them: 2.11M parameters, 950k tokens."""

from __future__ import annotations


def human_count(x: float, _pos=None) -> str:
    """Three significant digits and a k, M or B suffix; `_pos` lets matplotlib use it as a tick formatter."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"
