"""The optimisation history: every finished trial by its number (pruned and failed ones marked
differently, so the x axis is the trial number users read everywhere else) and the best so far."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tui_hpo.plots.figure import (
    BEST_COLOR,
    MIN_COMPLETE,
    STATE_COLOR,
    STATE_MARKER,
    Drawn,
    View,
    empty,
    objective_caption,
    plotext,
    scored,
)
from tui_hpo.plots.snapshot import Snapshot, Trial


def best_so_far(trials: Sequence[Trial], objective: int, maximize: bool) -> list[tuple[int, float]]:
    """(number, best completed value up to that trial) for each trial from the first completed
    one on, whatever its state: the line runs flat through pruned and failed trials, which never
    count as best (Optuna's `best_value` takes completed trials only)."""
    best: float | None = None
    line = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == "COMPLETE" and scored(trial, objective):
            v = trial.values[objective]
            if best is None or (v > best if maximize else v < best):
                best = v
        if best is not None:
            line.append((trial.number, best))
    return line


def draw(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    caption = objective_caption(snap, view)
    if len(snap.complete) < MIN_COMPLETE:
        return empty(caption, f"the history appears with {MIN_COMPLETE}+ completed trials: each finished trial "
                              "by number (pruned and failed marked), and the best so far")
    states = ("COMPLETE", "PRUNED", "FAIL")
    finished = [t for t in snap.trials if t.state in states]
    valued = {s: [(t.number, t.values[view.objective]) for t in finished
                  if t.state == s and scored(t, view.objective)] for s in states}
    ys = [v for points in valued.values() for _, v in points]
    floor = min(ys) if ys else 0.0
    unvalued = {s: [t.number for t in finished if t.state == s and not scored(t, view.objective)]
                for s in states}
    line = best_so_far(snap.trials, view.objective, snap.maximize(view.objective))

    def figure(plt: Any) -> None:
        for state in states:
            if valued[state]:
                plt.scatter([n for n, _ in valued[state]], [v for _, v in valued[state]], marker=STATE_MARKER[state],
                            color=STATE_COLOR[state], label=f"{state.lower()} ({len(valued[state])})")
            if unvalued[state]:  # a failed trial has no value: drawn on the floor of the plot
                plt.scatter(unvalued[state], [floor] * len(unvalued[state]), marker=STATE_MARKER[state],
                            color=STATE_COLOR[state], label=f"{state.lower()} ({len(unvalued[state])}), no value")
        plt.plot([n for n, _ in line], [v for _, v in line], marker="braille", color=BEST_COLOR, label="best so far")
        plt.xlabel("trial")

    return Drawn(caption, plotext(figure, width, height, view))
