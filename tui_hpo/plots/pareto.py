"""Several objectives: the Pareto front (which trials no other beats on every objective) and the
hypervolume after each completed trial, with Optuna's own front and hypervolume functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tui_hpo.plots.figure import BEST_COLOR, STATE_COLOR, Drawn, View, empty, plotext, short

if TYPE_CHECKING:
    from tui_hpo.plots.snapshot import Snapshot


def _losses(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Values turned into losses (maximised objectives negated): what Optuna's functions take."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=float).reshape(-1, len(directions)) * signs


def front_of(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The indices of `values` on the Pareto front (equal points all count)."""
    from optuna.study._multi_objective import _is_pareto_front

    if not values:
        return []
    return [int(i) for i in np.flatnonzero(_is_pareto_front(_losses(values, directions), False))]


def reference_point(values: Sequence[Sequence[float]], directions: Sequence[str]) -> tuple[float, ...]:
    """The hypervolume's reference point: each objective's worst value, moved a tenth of its range
    further (optuna-dashboard's choice), so the worst trials still add volume."""
    losses = _losses(values, directions)
    worst, best = losses.max(axis=0), losses.min(axis=0)
    point = worst + np.maximum((worst - best) * 0.1, 1e-12)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return tuple(float(x) for x in point * signs)


def hypervolume_history(values: Sequence[Sequence[float]], directions: Sequence[str],
                        reference: Sequence[float]) -> list[float]:
    """The hypervolume of the front after each of `values` (in trial order), against `reference`.
    Recomputed only when a trial joins the front; points beyond the reference add nothing."""
    from optuna._hypervolume import compute_hypervolume

    losses = _losses(values, directions)
    ref = _losses([reference], directions)[0]
    front = np.empty((0, len(directions)))
    volume, history = 0.0, []
    for point in losses:
        inside = bool((point < ref).all())
        dominated = bool(len(front) and (front <= point).all(axis=1).any())
        if inside and not dominated:
            front = np.vstack([front[~(point <= front).all(axis=1)], point])
            volume = float(compute_hypervolume(front, ref, assume_pareto=True))
        history.append(volume)
    return history


def draw_front(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    first = view.objective % len(snap.directions)
    second = (first + 1) % len(snap.directions)
    x_name, y_name = snap.metric(first), snap.metric(second)
    pair = f" (o: next pair of {len(snap.directions)})" if len(snap.directions) > 2 else ""
    caption = f"{y_name} against {x_name}{pair}"
    if len(snap.complete) < 2:
        return empty(caption, "the Pareto front appears with 2+ completed trials: every trial by its objectives, "
                              "the ones no other trial beats on all of them highlighted")
    on_front = set(snap.front)
    rest = [t for t in snap.complete if t.number not in on_front]
    best = sorted((t for t in snap.complete if t.number in on_front), key=lambda t: t.values[first])  # type: ignore[index]

    def figure(plt: Any) -> None:
        if rest:
            plt.scatter([t.values[first] for t in rest], [t.values[second] for t in rest], marker="•",
                        color=STATE_COLOR["COMPLETE"], label=f"dominated ({len(rest)})")
        xs, ys = [t.values[first] for t in best], [t.values[second] for t in best]
        if len(snap.directions) == 2:  # with two objectives the front is a line: joined, in order
            plt.plot(xs, ys, marker="braille", color=BEST_COLOR)
        plt.scatter(xs, ys, marker="★", color=BEST_COLOR, label=f"Pareto front ({len(best)})")
        plt.xlabel(f"{x_name} ({snap.directions[first]})")
        plt.ylabel(f"{y_name} ({snap.directions[second]})")

    return Drawn(caption, plotext(figure, width, height, view))


def draw_hypervolume(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    point = ", ".join(short(x) for x in snap.reference)
    caption = f"hypervolume after each completed trial (reference point {point})"
    if len(snap.hypervolume) < 2:
        return empty("hypervolume history", "the hypervolume history appears with 2+ completed trials: how much of "
                                            "the objective space the Pareto front covers, trial after trial")

    def figure(plt: Any) -> None:
        plt.plot([n for n, _ in snap.hypervolume], [v for _, v in snap.hypervolume], marker="braille",
                 color=BEST_COLOR, label="hypervolume")
        plt.xlabel("trial")

    return Drawn(caption, plotext(figure, width, height, view))
