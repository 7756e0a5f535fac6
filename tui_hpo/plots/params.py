"""Plots of the objective against the parameters: slice (one parameter), contour (a pair, as a
grid of coloured cells), parallel coordinates (all of them), and the correlation matrix."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Group
from rich.text import Text

from tui_hpo.plots.figure import (
    BEST_COLOR,
    MIN_COMPLETE,
    RAMP,
    STATE_COLOR,
    Drawn,
    View,
    chosen,
    empty,
    objective_caption,
    param_axis,
    plotext,
    position,
    ramp,
    ramp_rgb,
    scored_trials,
    shade,
    short,
    spread,
    tick_label,
)
from tui_hpo.plots.snapshot import Param, Snapshot, Trial

MAX_LINES = 150  # parallel coordinates: one plotext series per trial, so a sample of them
MIN_CONTOUR = 3


def jitter(number: int) -> float:
    """A fixed offset in [-0.25, 0.25) for a categorical strip, so equal values do not hide each
    other and the same trial sits at the same place on every draw."""
    return ((number * 0.6180339887) % 1.0 - 0.5) / 2


def pairs(snap: Snapshot) -> list[tuple[Param, Param]]:
    return list(itertools.combinations(snap.params, 2))


def draw_slice(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    metric = objective_caption(snap, view)
    if not snap.params:
        return empty(metric, "a slice plot needs a sampled parameter: this study has none")
    param, which = chosen(snap.params, view)
    caption = f"{metric} by {param.label}{which}"
    points = [(position(param, t.params.get(param.name)), t) for t in scored_trials(snap, view)
              if param.name in t.params]
    points = [(x, t) for x, t in points if x is not None]
    if len(points) < MIN_COMPLETE:
        return empty(caption, f"the slice plot appears with {MIN_COMPLETE}+ completed trials that sampled "
                              f"{param.name}: {metric} against each value")
    strip = param.kind == "categorical"
    xs = [x + jitter(t.number) if strip else x for x, t in points]
    ys = [t.values[view.objective] for _, t in points]
    best = (max if snap.maximize(view.objective) else min)(range(len(ys)), key=ys.__getitem__)

    def figure(plt: Any) -> None:
        plt.scatter(xs, ys, marker="•", color=STATE_COLOR["COMPLETE"], label=f"completed ({len(xs)})")
        plt.scatter([xs[best]], [ys[best]], marker="★", color=BEST_COLOR,
                    label=f"best (trial {points[best][1].number})")
        param_axis(plt, "x", param, [x for x, _ in points], width)
        plt.xlabel(param.label)

    return Drawn(caption, plotext(figure, width, height, view))


def bins(param: Param, at: Sequence[float], most: int) -> tuple[list[int], list[str]]:
    """The bin of each axis position in `at` and each bin's label: one bin per choice of a
    categorical parameter (and per value of an int one with few), else at most `most` bins of
    equal width (in log space for a log parameter) between the smallest and largest value."""
    if param.kind == "categorical":
        return [int(x) for x in at], [str(c) for c in param.choices]
    low, high = min(at), max(at)
    if param.kind == "int" and not param.log and high - low + 1 <= most:
        return [int(x - low) for x in at], [str(int(low) + i) for i in range(int(high - low) + 1)]
    n = max(1, min(most, round(math.sqrt(len(at))) + 1)) if high > low else 1
    width = (high - low) / n or 1.0
    index = [min(n - 1, int((x - low) / width)) for x in at]
    return index, [tick_label(param, low + width * (i + 0.5)) for i in range(n)]


def binned_means(xi: Sequence[int], yi: Sequence[int], z: Sequence[float], nx: int,
                 ny: int) -> list[list[float | None]]:
    """The mean of `z` in each cell of an `nx` x `ny` grid (rows by y bin), None where no trial fell."""
    sums = np.zeros((ny, nx))
    counts = np.zeros((ny, nx))
    np.add.at(sums, (np.asarray(yi), np.asarray(xi)), np.asarray(z, dtype=float))
    np.add.at(counts, (np.asarray(yi), np.asarray(xi)), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return [[None if counts[r, c] == 0 else float(means[r, c]) for c in range(nx)] for r in range(ny)]


def draw_contour(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    metric = objective_caption(snap, view)
    if len(snap.params) < 2:
        return empty(metric, f"a contour needs two parameters and {MIN_CONTOUR}+ completed trials: this study "
                             f"samples {len(snap.params)}")
    (px, py), which = chosen(pairs(snap), view)
    caption = f"mean {metric} by {px.label} (x) and {py.label} (y){which}"
    placed = [(position(px, t.params.get(px.name)), position(py, t.params.get(py.name)), t.values[view.objective])
              for t in scored_trials(snap, view)]
    placed = [p for p in placed if p[0] is not None and p[1] is not None]
    if len(placed) < MIN_CONTOUR:
        return empty(caption, f"the contour appears with {MIN_CONTOUR}+ completed trials that sampled both "
                              f"{px.name} and {py.name}: the mean {metric} of the trials in each cell")
    label_w = min(12, max(len(label) for label in bins(py, [p[1] for p in placed], 1)[1] + [py.name[:12]]))
    rows_free, cols_free = max(2, height - 3), max(4, width - label_w - 2)
    xi, x_labels = bins(px, [p[0] for p in placed], min(24, cols_free // 2))
    yi, y_labels = bins(py, [p[1] for p in placed], min(16, rows_free))
    nx, ny = len(x_labels), len(y_labels)
    grid = binned_means(xi, yi, [p[2] for p in placed], nx, ny)
    label_w = min(12, max(len(label) for label in y_labels))
    cell_w = max(1, min(20, (width - label_w - 2) // nx))
    cell_h = max(1, min(3, rows_free // ny))
    filled = [v for row in grid for v in row if v is not None]
    low, high = min(filled), max(filled)
    better_high = snap.maximize(view.objective)

    def fraction(v: float) -> float:
        f = (v - low) / (high - low) if high > low else 1.0
        return f if better_high else 1 - f

    lines = []
    for r in reversed(range(ny)):  # the largest y at the top
        for sub in range(cell_h):
            line = Text(f"{y_labels[r][:label_w] if sub == cell_h // 2 else '':>{label_w}} ", no_wrap=True)
            for v in grid[r]:
                if v is None:
                    line.append("·" * cell_w if sub == cell_h // 2 else " " * cell_w, style="dim")
                else:
                    f = fraction(v)
                    line.append(shade(f) * cell_w, style=ramp(f) if view.color else "")
            lines.append(line)
    lines.append(_x_axis(x_labels, cell_w, label_w + 1, width))
    legend = Text(" " * label_w + " worse ", no_wrap=True, overflow="ellipsis")
    for i in range(len(RAMP) * 2):
        f = i / (len(RAMP) * 2 - 1)
        legend.append(shade(f), style=ramp(f) if view.color else "")
    legend.append(f" better  {short(low if better_high else high)} … {short(high if better_high else low)}"
                  f"   · no trial   {len(placed)} trials")
    lines.append(legend)
    return Drawn(caption, Group(*lines))


def _x_axis(labels: Sequence[str], cell_w: int, indent: int, width: int) -> Text:
    """Bin labels under a grid: every one that fits without touching its neighbour."""
    line = [" "] * max(1, width - 1)
    for i, label in enumerate(labels):
        at = indent + i * cell_w
        text = label[:max(cell_w - 1, 4)]
        if at + len(text) <= len(line) and all(c == " " for c in line[max(0, at - 1):at + len(text) + 1]):
            line[at:at + len(text)] = text
    return Text("".join(line).rstrip(), style="dim", no_wrap=True)


def axis_position(param: Param, trial: Trial, low: float, high: float) -> float | None:
    """Where `trial` crosses `param`'s parallel axis, 0 (bottom) to 1 (top)."""
    at = position(param, trial.params.get(param.name)) if param.name in trial.params else None
    if at is None:
        return None
    return (at - low) / (high - low) if high > low else 0.5


def draw_parallel(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    metric = objective_caption(snap, view)
    trials = scored_trials(snap, view)
    if not snap.params or len(trials) < MIN_COMPLETE:
        return empty(metric, f"parallel coordinates appear with a sampled parameter and {MIN_COMPLETE}+ completed "
                             "trials: one line per trial through every parameter and the objective")
    axes = list(snap.params[:max(1, width // 10 - 1)])
    maximize = snap.maximize(view.objective)
    trials.sort(key=lambda t: t.values[view.objective], reverse=not maximize)  # worst first: the best drawn last
    shown = spread(trials, MAX_LINES)
    ranges: list[tuple[float, float]] = []
    for param in axes:
        at = [x for x in (position(param, t.params.get(param.name)) for t in trials) if x is not None]
        ranges.append((min(at), max(at)) if at else (0.0, 1.0))
    ys = [t.values[view.objective] for t in trials]
    low, high = min(ys), max(ys)
    names = [p.name for p in axes] + [snap.metric(view.objective)]
    cut = max(3, width // len(names) - 2)

    def figure(plt: Any) -> None:
        for rank, trial in enumerate(shown):
            f = rank / max(1, len(shown) - 1)
            points = [(i, axis_position(p, trial, *ranges[i])) for i, p in enumerate(axes)]
            points.append((len(axes), (trial.values[view.objective] - low) / (high - low) if high > low else 0.5))
            points = [(x, y) for x, y in points if y is not None]
            plt.plot([x for x, _ in points], [y for _, y in points], marker="braille",
                     color=ramp_rgb(f))
        plt.xticks(list(range(len(names))), [n[:cut] for n in names])
        plt.yticks([0, 1], ["low", "high"])
        plt.xlim(-0.1, len(names) - 0.9)
        plt.ylim(-0.02, 1.02)

    span = Text("", style="dim", no_wrap=False)
    for param, (lo, hi) in zip(axes, ranges, strict=True):
        span.append(f"{param.name} {tick_label(param, lo)}…{tick_label(param, hi)}  ")
    span.append(f"{snap.metric(view.objective)} {short(low)}…{short(high)}")
    said = f"{len(shown)} of {len(trials)} trials, spread over the ranking" if len(shown) < len(trials) else \
        f"{len(trials)} trials"
    note = Text(f"{said}; colour: worse (dark) to better (yellow)"
                + (f"; first {len(axes)} of {len(snap.params)} parameters" if len(axes) < len(snap.params) else ""),
                style="dim", no_wrap=True, overflow="ellipsis")
    spare = 1 + math.ceil(len(span.plain) / max(1, width))
    return Drawn(f"{metric}, every parameter", Group(plotext(figure, width, max(4, height - spare), view), span, note))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equally long columns (ties take their mean rank);
    None when it is undefined (fewer than three pairs, or a constant column)."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(xs: Sequence[float]) -> np.ndarray:
    values = np.asarray(xs, dtype=float)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return (sums / counts)[inverse]


def correlation(columns: dict[str, list[float | None]]) -> tuple[list[str], list[list[float | None]]]:
    """Spearman correlation of every pair of `columns` (None: the value is missing in that row),
    each pair over the rows where both have a value."""
    names = list(columns)
    matrix: list[list[float | None]] = [[None] * len(names) for _ in names]
    for i, j in itertools.combinations_with_replacement(range(len(names)), 2):
        both = [(x, y) for x, y in zip(columns[names[i]], columns[names[j]], strict=True)
                if x is not None and y is not None]
        matrix[i][j] = matrix[j][i] = spearman([x for x, _ in both], [y for _, y in both])
    return names, matrix


def draw_correlation(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    caption = "Spearman correlation of the numeric parameters and the objective(s)"
    trials = scored_trials(snap, view)
    numeric = [p for p in snap.params if p.numeric]
    if not numeric or len(trials) < 3:
        return empty(caption, "the correlation matrix appears with a numeric parameter and 3+ completed trials: "
                              "how each pair of parameters and objectives rise and fall together")
    columns: dict[str, list[float | None]] = {
        p.name: [float(t.params[p.name]) if isinstance(t.params.get(p.name), int | float) else None for t in trials]
        for p in numeric}
    for k in range(len(snap.directions)):
        columns[snap.metric(k)] = [t.values[k] for t in trials]  # type: ignore[index]
    names, matrix = correlation(columns)
    label_w = min(16, max(len(n) for n in names) + 4)
    fit = max(1, min(len(names), (width - label_w) // 7, height - 2))
    keep = list(range(len(names) - len(snap.directions), len(names)))  # the objectives stay
    keep = sorted(set(range(max(0, fit - len(keep)))) | set(keep))[-fit:]
    cell_w = max(7, min(12, (width - label_w) // len(keep)))
    row_h = max(1, min(3, (height - 2) // len(keep)))
    head = Text(" " * label_w, no_wrap=True)
    for col in keep:
        head.append(f"{col + 1:^{cell_w}}", style="bold")
    lines = [head]
    for row in keep:
        for sub in range(row_h):
            middle = sub == row_h // 2
            line = Text(f"{row + 1:>2} {names[row]}"[:label_w].ljust(label_w) if middle else " " * label_w,
                        style="bold", no_wrap=True)
            for col in keep:
                r = matrix[row][col]
                said = ("-" if r is None else f"{r:+.2f}") if middle else ""
                if r is None:
                    line.append(f"{said:^{cell_w}}", style="dim")
                else:
                    line.append(f"{said:^{cell_w}}", style=_diverging(r) if view.color else
                                ("bold" if abs(r) >= 0.5 else ""))
            lines.append(line)
    lines.append(Text(f"over {len(trials)} completed trials; red rises together, blue opposite"
                      + (f"; {len(keep)} of {len(names)} shown" if len(keep) < len(names) else ""),
                      style="dim", no_wrap=True, overflow="ellipsis"))
    return Drawn(caption, Group(*lines))


def _diverging(r: float) -> str:
    """A cell's style for correlation `r`: red for +1, blue for -1, fading to the background at 0."""
    strength = min(1.0, abs(r))
    base = (200, 60, 60) if r > 0 else (60, 100, 210)
    red, green, blue = (round(40 + (c - 40) * strength) for c in base)
    return f"{'bold ' if strength >= 0.5 else ''}white on rgb({red},{green},{blue})"
