"""The System screen's history: one host's samples summed into time bins for each window at once.

Bins are aligned to absolute time (bin k covers [k*size, (k+1)*size)), so a tick adds only its new
samples and no bin ever moves: switching between the 5, 30 and 60 minute windows costs nothing,
and an hour of samples is read from the database once, at start (or reattach), not every second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tui_hpo.db import Sample

WINDOWS_S = (300, 1800, 3600)  # the graphs' time windows, cycled with `w`
BINS = 480  # per window: 2 dots a cell, so a graph 240 cells wide still draws every bin
HOLD_S = 5.0  # a gap in the samples shorter than this repeats the last value (samples come each ~1 s)


def series(sample: Sample) -> dict[str, float]:
    """What a sample adds to each graph: CPU and RAM percent; per GPU its utilisation, memory
    used (percent of total), temperature (C) and power (W). A reading NVML could not take is left out."""
    out = {"cpu": sample.cpu_percent, "ram": sample.ram_percent}
    for gpu in sample.gpus:
        key = f"gpu{gpu.get('index', 0)}"
        used, total = gpu.get("mem_used_mb"), gpu.get("mem_total_mb")
        for name, value in (("util", gpu.get("util_percent")),
                            ("mem", used / total * 100 if used is not None and total else None),
                            ("temp", gpu.get("temperature_c")), ("power", gpu.get("power_w"))):
            if value is not None:
                out[f"{key}.{name}"] = float(value)
    return out


@dataclass
class History:
    """Sums and counts per (window, bin, series) of the samples added so far."""

    bins: dict[int, dict[int, dict[str, list[float]]]] = field(
        default_factory=lambda: {w: {} for w in WINDOWS_S})

    def add(self, sample: Sample) -> None:
        values = series(sample)
        for window, by_bin in self.bins.items():
            acc = by_bin.setdefault(int(sample.ts // (window / BINS)), {})
            for key, value in values.items():
                total = acc.setdefault(key, [0.0, 0])
                total[0] += value
                total[1] += 1

    def view(self, window: int, now: float) -> dict[str, list[float | None]]:
        """Each series' mean per bin of the window that ends now, oldest first (None: no sample),
        short gaps held at the last value. Bins that fell out of their window are dropped here."""
        size = window / BINS
        last = int(now // size)
        first = last - BINS + 1
        for w, by_bin in self.bins.items():
            oldest = int(now // (w / BINS)) - BINS + 1
            for stale in [b for b in by_bin if b < oldest]:
                del by_bin[stale]
        by_bin = self.bins[window]
        out: dict[str, list[float | None]] = {}
        for i, b in enumerate(range(first, last + 1)):
            for key, (total, count) in by_bin.get(b, {}).items():
                out.setdefault(key, [None] * BINS)[i] = total / count
        hold = math.ceil(HOLD_S / size)
        for points in out.values():
            held, since = None, hold
            for i, value in enumerate(points):
                if value is not None:
                    held, since = value, 0
                else:
                    since += 1
                    if since <= hold:
                        points[i] = held
        return dict(sorted(out.items()))
