"""A scrolling history graph in braille, as btop draws its CPU box: each cell holds 2x4 dots, so a
graph of W x H cells shows 2W points in 4H levels, newest at the right.

The values come as fine time bins (tui_hpo.history); the widget fits them to its own size on
every render, so a resize redraws at the new resolution without asking for data again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

# The bits of a braille cell (U+2800 + bits) with its lowest 0-4 dots set, left column and right:
# the dots are numbered 1, 2, 3, 7 down the left (bits 0x01, 0x02, 0x04, 0x40) and 4, 5, 6, 8 down
# the right (0x08, 0x10, 0x20, 0x80).
LEFT = (0x00, 0x40, 0x44, 0x46, 0x47)
RIGHT = (0x00, 0x80, 0xA0, 0xB0, 0xB8)
BRAILLE = 0x2800


def level_style(fraction: float) -> str:
    """The colour of a load: green, yellow from 70%, red from 90% (as the gauges colour bars)."""
    return "red" if fraction >= 0.9 else ("yellow" if fraction >= 0.7 else "green")


def fit(values: Sequence[float | None], n: int) -> list[float | None]:
    """`values` (oldest first) resampled to `n` points: means of the bins that share a point when
    there are more values than points, each value repeated when there are fewer. A point whose
    bins are all empty stays empty (no data then: the graph shows a gap)."""
    if n <= 0 or not values:
        return [None] * max(0, n)
    size = len(values)
    if size <= n:
        return [values[j * size // n] for j in range(n)]
    out: list[float | None] = []
    for j in range(n):
        known = [v for v in values[j * size // n:(j + 1) * size // n] if v is not None]
        out.append(sum(known) / len(known) if known else None)
    return out


def levels(points: Sequence[float | None], rows: int, high: float) -> list[int]:
    """How many dots (of rows*4) each point fills from the bottom. Any value above zero fills one
    dot at least, so a light load still shows; None and zero fill none."""
    top = rows * 4
    out = []
    for value in points:
        if value is None or value <= 0 or high <= 0:
            out.append(0)
        else:
            out.append(min(top, max(1, round(value / high * top))))
    return out


def braille(points: Sequence[float | None], rows: int, high: float) -> list[str]:
    """A filled area graph of `points` (two per cell, so ceil(len/2) cells wide) on `rows` lines,
    top line first, `high` at the top. Empty cells are spaces."""
    filled = levels(points, rows, high)
    if len(filled) % 2:
        filled.append(0)
    lefts, rights = filled[0::2], filled[1::2]
    lines = []
    for row in range(rows):
        below = (rows - 1 - row) * 4  # dot levels under this line
        lines.append("".join(
            chr(BRAILLE + LEFT[min(4, max(0, left - below))] + RIGHT[min(4, max(0, right - below))])
            if left > below or right > below else " " for left, right in zip(lefts, rights, strict=True)))
    return lines


class Graph(Widget):
    """A braille area graph of one series that fills the widget (height and width 1fr)."""

    DEFAULT_CSS = "Graph { width: 1fr; height: 1fr; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values: Sequence[float | None] = ()
        self.high = 100.0

    def plot(self, values: Sequence[float | None], high: float = 100.0) -> None:
        """Show `values` (fine time bins, oldest first) on a scale from 0 to `high`."""
        self.values, self.high = values, high
        self.refresh()

    def render(self) -> Text:
        width, rows = self.content_size.width, self.content_size.height
        if width <= 0 or rows <= 0:
            return Text()
        points = fit(self.values, width * 2)
        if all(p is None for p in points):
            return Text("no samples in this window", style="dim", no_wrap=True, overflow="ellipsis")
        text = Text(no_wrap=True, overflow="crop")
        for row, line in enumerate(braille(points, rows, self.high)):
            if row:
                text.append("\n")
            text.append(line, style=level_style((rows - row - 0.5) / rows))  # by height, as btop
        return text


def nice_ceiling(value: float) -> float:
    """The scale for a series without a natural top (power in W): the next 1, 2 or 5 x 10^k."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= value)
