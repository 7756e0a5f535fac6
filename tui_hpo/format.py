"""Small text formatters shared by the screens (numbers, durations, params, bars)."""

from __future__ import annotations

import math
from typing import Any

BLOCKS = " ▁▂▃▄▅▆▇█"


def duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4g}"


def params(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={number(v)}" for k, v in values.items())


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells, eighths resolution."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = "▏▎▍▌▋▊▉"[part - 1] if part else ""
    return ("█" * full + partial).ljust(width)


def spark(values: list[float], high: float = 100.0) -> str:
    """One cell per value, e.g. CPU use per core."""
    return "".join(BLOCKS[min(8, max(0, round(v / high * 8)))] for v in values)
