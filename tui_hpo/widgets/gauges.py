"""System gauges: CPU (overall and per core), RAM, disk, and each GPU's use, memory, heat, power.

Both widgets draw at their current size and again on resize, so they fit any panel: the
dashboard's side column at 80 columns as well as the System screen at 200.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Static

from tui_hpo.db import Sample
from tui_hpo.format import BLOCKS, bar
from tui_hpo.widgets.graph import level_style

IDLE = "·"  # a core under 1/16 load: a dot, so an idle core still shows where it is
STRIP_LINES = 2  # the gauges' per-core strip wraps onto at most this many lines


def _row(table: Table, label: str, fraction: float, text: str, width: int) -> None:
    table.add_row(label, Text(bar(fraction, width), style=level_style(fraction)), text)


def _grouped(values: Sequence[float], cells: int) -> list[float]:
    """`values` averaged in consecutive groups so that at most `cells` remain."""
    if len(values) <= cells:
        return list(values)
    group = math.ceil(len(values) / cells)
    return [sum(values[i:i + group]) / len(values[i:i + group]) for i in range(0, len(values), group)]


def _block(value: float) -> Text:
    eighths = round(min(100.0, max(0.0, value)) / 100 * 8)
    return Text(BLOCKS[eighths] if eighths else IDLE, style=level_style(value / 100) if eighths else "dim")


def core_strip(values: Sequence[float], width: int, lines: int = STRIP_LINES) -> Text:
    """One block per core, its height the core's load, in `width` cells on at most `lines` lines:
    each core gets up to three cells while there is room; beyond width x lines cores, neighbours
    are averaged."""
    cores = _grouped(values, max(1, width) * lines)
    cell = max(1, min(3, (width + 1) // max(1, len(cores)) - 1))
    gap = " " if cell > 1 else ""
    per_line = max(1, (width + len(gap)) // (cell + len(gap)))
    text = Text(no_wrap=True, overflow="crop")
    for i, value in enumerate(cores):
        if i and i % per_line == 0:
            text.append("\n")
        elif i:
            text.append(gap)
        block = _block(value)
        text.append(block.plain * cell, style=block.style)
    return text


def core_bars(values: Sequence[float], width: int, height: int) -> Text:
    """Every core's load in a `width` x `height` box, as btop's CPU box lists them: a labelled
    horizontal bar per core, in as many columns as the height asks for; where those would be
    too narrow, a vertical bar per core (in bands, neighbours averaged beyond width x height)."""
    if not values:
        return Text("no per-core readings", style="dim")
    if width <= 0 or height <= 0:
        return Text()
    count = len(values)
    label = len(str(count - 1))
    columns = math.ceil(count / height)
    rows = math.ceil(count / columns)
    col_width = (width - (columns - 1)) // columns
    if col_width >= label + 4:  # the label, a space and a bar of three cells at least
        percent = col_width >= label + 1 + 4 + 5  # room for " 100%" beside a bar of four cells
        bar_width = col_width - label - 1 - (5 if percent else 0)
        text = Text(no_wrap=True, overflow="crop")
        for row in range(rows):
            if row:
                text.append("\n")
            for column in range(columns):
                core = column * rows + row  # column by column, as btop numbers them
                if core >= count:
                    break
                if column:
                    text.append(" ")
                value = values[core]
                text.append(f"{core:>{label}} ", style="dim")
                text.append(bar(value / 100, bar_width), style=level_style(value / 100))
                if percent:
                    text.append(f"{value:4.0f}%")
        return text
    return _vertical(values, width, height)


def _vertical(values: Sequence[float], width: int, height: int) -> Text:
    """A vertical bar per core, eighths resolution, in bands of `width` cores."""
    cores = _grouped(values, width * height)
    bands = math.ceil(len(cores) / width)
    band_height = max(1, height // bands)
    text = Text(no_wrap=True, overflow="crop")
    for band in range(bands):
        chunk = cores[band * width:(band + 1) * width]
        for line in range(band_height):
            if text:
                text.append("\n")
            floor = (band_height - 1 - line) * 8  # eighths under this line
            for value in chunk:
                eighths = round(min(100.0, max(0.0, value)) / 100 * band_height * 8) - floor
                if eighths <= 0:
                    text.append(IDLE if line == band_height - 1 else " ", style="dim")
                else:
                    text.append(BLOCKS[min(8, eighths)], style=level_style(value / 100))
    return text


class CoreBars(Widget):
    """Per-core load that fills the widget (core_bars), redrawn at each size."""

    DEFAULT_CSS = "CoreBars { height: 1fr; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.values: tuple[float, ...] = ()

    def show(self, values: Sequence[float]) -> None:
        self.values = tuple(values)
        self.refresh()

    def render(self) -> Text:
        return core_bars(self.values, self.content_size.width, self.content_size.height)


class Gauges(Static):
    """Readings of one or more hosts, newest sample of each."""

    DEFAULT_CSS = "Gauges { height: auto; }"

    samples: list[Sample] | None = None

    def on_resize(self, event: Resize) -> None:
        if self.samples is not None:
            self.show(self.samples)

    def show(self, samples: list[Sample]) -> None:
        self.samples = samples
        if not samples:
            self.update(Text("no recent samples: the engine records one per second while it runs", style="dim"))
            return
        # label (5) + bar + value (up to 9: "141/141G"), two gaps: the bar takes what is left
        width = max(4, self.content_size.width - 16) if self.content_size.width else 12
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True, min_width=5)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, justify="right", min_width=7)
        for sample in samples:
            if len(samples) > 1:
                table.add_row(Text(sample.host, style="bold underline"), "", "")
            _row(table, "CPU", sample.cpu_percent / 100, f"{sample.cpu_percent:3.0f}%", width)
            if sample.cpu_per_core:
                table.add_row("cores", core_strip(sample.cpu_per_core, width),
                              Text(f"max{max(sample.cpu_per_core):3.0f}%", style="dim"))
            _row(table, "RAM", sample.ram_percent / 100, f"{sample.ram_percent:3.0f}%", width)
            for gpu in sample.gpus:
                util = (gpu.get("util_percent") or 0) / 100
                used, total = gpu.get("mem_used_mb") or 0, gpu.get("mem_total_mb") or 0
                _row(table, f"GPU{gpu['index']}", util, f"{util * 100:3.0f}%", width)
                if total:
                    _row(table, "mem", used / total, f"{used / 1024:.0f}/{total / 1024:.0f}G", width)
                extra = " ".join(p for p in (
                    f"{gpu['temperature_c']:.0f}C" if gpu.get("temperature_c") is not None else "",
                    f"{gpu['power_w']:.0f}W" if gpu.get("power_w") is not None else "") if p)
                if extra:
                    table.add_row("", Text(extra, style="dim"), "")
            if sample.disk_free_gb is not None:
                table.add_row("disk", Text(f"{sample.disk_free_gb:.0f} GiB free", style="dim"), "")
        self.update(table)
