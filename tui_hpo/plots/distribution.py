"""How the objective is distributed over the completed trials: the empirical distribution
function (EDF), a histogram (the performance distribution), and the rank plot (a pair of
parameters, each trial coloured by how its objective ranks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.text import Text

from tui_hpo.plots.figure import (
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
)
from tui_hpo.plots.params import jitter, pairs
from tui_hpo.plots.snapshot import Snapshot

RANK_GROUPS = 5  # the rank plot's colours, best fifth to worst fifth


def edf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """The empirical distribution function: sorted values, and for each the share of values at
    or below it (ties share the highest share)."""
    xs = sorted(values)
    n = len(xs)
    shares = []
    for i, x in enumerate(xs):
        last = i
        while last + 1 < n and xs[last + 1] == x:
            last += 1
        shares.append((last + 1) / n)
    return xs, shares


def histogram(values: Sequence[float], n_bins: int) -> tuple[list[float], list[int]]:
    """`n_bins` equal bins from the smallest value to the largest: their edges (n_bins + 1) and
    counts; the largest value counts in the last bin. All values equal: one bin."""
    low, high = min(values), max(values)
    if high == low:
        return [low, high], [len(values)]
    width = (high - low) / n_bins
    counts = [0] * n_bins
    for v in values:
        counts[min(n_bins - 1, int((v - low) / width))] += 1
    return [low + width * i for i in range(n_bins + 1)], counts


def rank_groups(values: Sequence[float], maximize: bool, groups: int = RANK_GROUPS) -> list[int]:
    """Each value's group by rank, 0 for the best `1/groups` of them, `groups - 1` for the worst."""
    order = sorted(range(len(values)), key=values.__getitem__, reverse=maximize)
    group = [0] * len(values)
    for rank, i in enumerate(order):
        group[i] = min(groups - 1, rank * groups // max(1, len(values)))
    return group


def draw_edf(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    caption = objective_caption(snap, view)
    ys = [t.values[view.objective] for t in scored_trials(snap, view)]
    if len(ys) < MIN_COMPLETE:
        return empty(caption, f"the EDF appears with {MIN_COMPLETE}+ completed trials: the share of trials at or "
                              f"below each value of {snap.metric(view.objective)}")
    xs, shares = edf(ys)

    def figure(plt: Any) -> None:
        plt.plot(xs, shares, marker="braille", color=STATE_COLOR["COMPLETE"], label=f"{len(xs)} completed trials")
        plt.ylim(0, 1)
        plt.xlabel(snap.metric(view.objective))
        plt.ylabel("share ≤ x")

    return Drawn(f"empirical distribution of {caption}", plotext(figure, width, height, view))


def draw_histogram(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    caption = objective_caption(snap, view)
    ys = [t.values[view.objective] for t in scored_trials(snap, view)]
    if len(ys) < MIN_COMPLETE:
        return empty(caption, f"the histogram appears with {MIN_COMPLETE}+ completed trials: how many trials "
                              f"reached each range of {snap.metric(view.objective)}")
    label_w = len(str(len(ys))) + 1
    room = width - label_w - 1
    n_bins = max(2, min(40, room // 3, round(2 * len(ys) ** (1 / 3)) + 1))  # Rice's rule, as fits
    edges, counts = histogram(ys, n_bins)
    bar_w = max(1, min(10, room // len(counts) - 1))
    best = (max if snap.maximize(view.objective) else min)(ys)
    best_bin = next(i for i in reversed(range(len(counts))) if edges[i] <= best) if len(counts) > 1 else 0
    rows = max(2, height - 3)
    top = max(counts)
    lines = []
    for r in reversed(range(rows)):
        label = str(top) if r == rows - 1 else ("0" if r == 0 else "")
        line = Text(no_wrap=True)
        line.append(f"{label:>{label_w}}│", style="dim")
        for i, count in enumerate(counts):
            eighths = round(count / top * rows * 8) - r * 8
            cell = "█" if eighths >= 8 else (" ▁▂▃▄▅▆▇"[eighths] if eighths > 0 else " ")
            style = ("green" if i == best_bin else "blue") if view.color else ""
            line.append(cell * bar_w + " ", style=style)
        lines.append(line)
    marks = [" "] * (len(counts) * (bar_w + 1))
    marks[best_bin * (bar_w + 1) + bar_w // 2] = "▲"
    lines.append(Text(" " * label_w + "└" + "".join(marks).rstrip(), style="dim", no_wrap=True))
    ticks = [" "] * (label_w + 1 + len(counts) * (bar_w + 1))
    for i in [*range(0, len(edges) - 1, max(1, len(edges) // 5)), len(edges) - 1]:
        text, at = short(edges[i]), label_w + 1 + i * (bar_w + 1)
        at = min(at, len(ticks) - len(text))  # the last edge ends where the bars end
        if all(c == " " for c in ticks[max(0, at - 1):at + len(text) + 1]):
            ticks[at:at + len(text)] = text
    lines.append(Text("".join(ticks).rstrip(), style="dim", no_wrap=True, overflow="ellipsis"))
    return Drawn(f"distribution of {caption}: trials per range of {len(ys)} completed, ▲ the best ({short(best)})",
                 Group(*lines))


def draw_rank(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    metric = objective_caption(snap, view)
    trials = scored_trials(snap, view)
    if not snap.params or len(trials) < MIN_COMPLETE:
        return empty(metric, f"the rank plot appears with a sampled parameter and {MIN_COMPLETE}+ completed "
                             "trials: each trial placed by two parameters, coloured by how it ranks")
    if len(snap.params) == 1:  # one parameter: against the objective itself
        px, which = snap.params[0], ""
        py = None
    else:
        (px, py), which = chosen(pairs(snap), view)
    caption = f"{metric} rank by {px.label} (x)" + (f" and {py.label} (y)" if py else "") + which
    placed = []
    for t in trials:
        x = position(px, t.params.get(px.name))
        y = position(py, t.params.get(py.name)) if py else t.values[view.objective]
        if x is not None and y is not None:
            placed.append((x + (jitter(t.number) if not px.numeric else 0),
                           y + (jitter(t.number * 7) if py and not py.numeric else 0), t.values[view.objective]))
    if len(placed) < MIN_COMPLETE:
        return empty(caption, f"the rank plot needs {MIN_COMPLETE}+ completed trials that sampled both parameters")
    groups = rank_groups([v for *_, v in placed], snap.maximize(view.objective))

    def figure(plt: Any) -> None:
        for g in reversed(range(RANK_GROUPS)):  # the best drawn last, on top
            members = [p for p, gi in zip(placed, groups, strict=True) if gi == g]
            if members:
                f = 1 - g / (RANK_GROUPS - 1)
                plt.scatter([m[0] for m in members], [m[1] for m in members], marker="•" if g else "★",
                            color=ramp_rgb(f), label=_group_label(g))
        param_axis(plt, "x", px, [p[0] for p in placed], width)
        if py is not None:
            param_axis(plt, "y", py, [p[1] for p in placed], height)
        plt.xlabel(px.label)

    legend = Text("  worse ", style="dim", no_wrap=True)
    for i in range(len(RAMP) * 2):
        f = i / (len(RAMP) * 2 - 1)
        legend.append(shade(f), style=ramp(f) if view.color else "")
    legend.append(f" better ({len(placed)} trials{'; y: ' + py.label if py else ''})", style="dim")
    return Drawn(caption, Group(plotext(figure, width, height - 1, view), legend))


def _group_label(group: int) -> str:
    low, high = group * 100 // RANK_GROUPS, (group + 1) * 100 // RANK_GROUPS
    return "best fifth" if group == 0 else f"{low}-{high}%"
