"""The Analysis screen's plots: everything optuna-dashboard draws, in the terminal.

`read_snapshot` reads a study once per version (in a thread worker); each plot then draws from
that snapshot at any panel size, as plotext text or a Rich grid of coloured cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tui_hpo.plots import distribution, history, params, pareto, trials
from tui_hpo.plots.figure import Drawn, View
from tui_hpo.plots.snapshot import Param, Snapshot, Trial, read_snapshot


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    draw: Callable[[Snapshot, View, int, int], Drawn]
    about: str = ""  # what the `p` key cycles through: "parameter", "pair" (of parameters) or nothing
    multi_only: bool = False  # drawn only for several objectives


PLOTS = (
    Plot("history", "optimisation history", history.draw),
    Plot("slice", "slice", params.draw_slice, "parameter"),
    Plot("contour", "contour", params.draw_contour, "pair"),
    Plot("parallel", "parallel coordinates", params.draw_parallel),
    Plot("intermediate", "intermediate values", trials.draw_intermediate),
    Plot("timeline", "timeline", trials.draw_timeline),
    Plot("edf", "EDF", distribution.draw_edf),
    Plot("rank", "rank", distribution.draw_rank, "pair"),
    Plot("histogram", "histogram", distribution.draw_histogram),
    Plot("correlation", "correlation", params.draw_correlation),
    Plot("pareto", "Pareto front", pareto.draw_front, multi_only=True),
    Plot("hypervolume", "hypervolume history", pareto.draw_hypervolume, multi_only=True),
)


def plots_for(snap: Snapshot) -> list[Plot]:
    """The plots that apply to `snap`: the Pareto ones only for several objectives."""
    return [p for p in PLOTS if snap.multi or not p.multi_only]


__all__ = ["PLOTS", "Drawn", "Param", "Plot", "Snapshot", "Trial", "View", "plots_for", "read_snapshot"]
