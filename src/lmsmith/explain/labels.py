"""Labels that stay readable on the page: sizes that survive the page's scaling, and no two on top of another.

The page shows every picture at most PAGE_PX wide (`img { max-width: 100% }`), so a wide figure is shrunk:
a 7 pt label of a 28-inch figure ends about 3 px high. Sizes here are chosen for the size shown, not drawn.
"""

from __future__ import annotations

import math

PAGE_PX = 900  # the width a picture is shown at (the page's column, less its margins)
MIN_PX = 11  # the smallest text height that reads comfortably on a screen
DPI = 110  # what lmsmith.report.page draws figures at


def readable_pt(figure_width_in: float, px: float = MIN_PX) -> float:
    """The font size (points) that shows `px` pixels high once a figure this wide is scaled to the page."""
    shrink = min(1.0, PAGE_PX / (figure_width_in * DPI))
    return px / shrink * 72 / DPI


def every_nth(n_labels: int, axis_in: float, font_pt: float) -> int:
    """Label every how-many-th tick so labels `font_pt` high fit side by side along `axis_in` inches."""
    room = axis_in * 72 / max(n_labels, 1)
    return max(1, math.ceil(font_pt * 1.2 / room))


def spread_out(points_px, sizes_px) -> list[int]:
    """Indices of the points whose labels can be drawn without covering another label: each point, in the order
    given (most important first), keeps its label only if the label's box (to its upper right) is free."""
    kept: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    for i, ((x, y), (w, h)) in enumerate(zip(points_px, sizes_px)):
        box = (x, y, x + w, y + h)
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
            kept.append(i)
            boxes.append(box)
    return kept
