"""The Analysis screen's plots (tui_hpo.plots): the data of each plot on small known inputs, the
empty states, and the screen cycling every plot on a single- and a multi-objective study."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from tests.studies import make_plot_study
from tui_hpo.plots import PLOTS, Param, Snapshot, Trial, View, plots_for
from tui_hpo.plots.distribution import edf, histogram, rank_groups
from tui_hpo.plots.history import best_so_far
from tui_hpo.plots.params import binned_means, bins, correlation, spearman
from tui_hpo.plots.pareto import front_of, hypervolume_history, reference_point
from tui_hpo.plots.trials import pruning_points, timeline


def trial(number: int, state: str = "COMPLETE", value: float | None = None, worker: str | None = None,
          start: float | None = None, end: float | None = None,
          steps: tuple[tuple[int, float], ...] = ()) -> Trial:
    return Trial(number, state, None if value is None else (value,), {}, start, end, worker, steps)


def test_best_so_far_runs_through_pruned_and_failed_trials() -> None:
    trials = [trial(0, "FAIL"), trial(1, value=0.5), trial(2, "PRUNED", 0.9), trial(3, value=0.4),
              trial(4, "FAIL"), trial(5, value=0.7)]
    # from the first completed trial on, at every number; the pruned 0.9 is never the best
    assert best_so_far(trials, 0, maximize=True) == [(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5), (5, 0.7)]
    assert best_so_far(trials, 0, maximize=False) == [(1, 0.5), (2, 0.5), (3, 0.4), (4, 0.4), (5, 0.4)]
    assert best_so_far([trial(0, "FAIL")], 0, maximize=True) == []


def test_edf_histogram_and_rank_groups() -> None:
    assert edf([3.0, 1.0, 2.0, 2.0]) == ([1.0, 2.0, 2.0, 3.0], [0.25, 0.75, 0.75, 1.0])
    edges, counts = histogram([0.0, 1.0, 2.0, 3.0, 4.0], 4)
    assert edges == [0.0, 1.0, 2.0, 3.0, 4.0] and counts == [1, 1, 1, 2]  # the largest in the last bin
    assert histogram([5.0, 5.0], 3) == ([5.0, 5.0], [2])
    assert rank_groups([0.1, 0.9, 0.5, 0.3, 0.7], maximize=True) == [4, 0, 2, 3, 1]
    assert rank_groups([0.1, 0.9, 0.5, 0.3, 0.7], maximize=False) == [0, 4, 2, 1, 3]


def test_contour_bins_and_cell_means() -> None:
    model = Param("model", "categorical", choices=("a", "b"))
    assert bins(model, [0.0, 1.0, 1.0], 10) == ([0, 1, 1], ["a", "b"])
    width = Param("width", "int")
    assert bins(width, [2.0, 4.0, 3.0], 10) == ([0, 2, 1], ["2", "3", "4"])  # one bin per value when few
    lr = Param("lr", "float", log=True)  # positions are log10 values: bins of equal width in log space
    index, labels = bins(lr, [-4.0, -3.0, -2.0], 2)
    assert index == [0, 1, 1] and labels == ["3.2e-04", "0.00316"]  # the centres: 10^-3.5, 10^-2.5
    grid = binned_means([0, 1, 1, 0], [0, 0, 0, 1], [1.0, 2.0, 4.0, 8.0], nx=2, ny=2)
    assert grid == [[1.0, 3.0], [8.0, None]]


def test_pareto_front_and_hypervolume_history() -> None:
    values = [(1.0, 1.0), (0.5, 1.5), (1.5, 1.5), (0.4, 0.4)]
    assert front_of(values[:3], ("minimize", "minimize")) == [0, 1]
    assert front_of(values[:3], ("maximize", "maximize")) == [2]
    # against (2, 2): one box of 1, then an L of 1.25; a dominated point adds nothing; then all of 1.6^2
    assert hypervolume_history(values, ("minimize", "minimize"), (2.0, 2.0)) == pytest.approx(
        [1.0, 1.25, 1.25, 2.56])
    assert hypervolume_history([(1.0, 3.0)], ("maximize", "maximize"), (0.0, 0.0)) == [3.0]
    assert hypervolume_history([(3.0, 3.0)], ("minimize", "minimize"), (2.0, 2.0)) == [0.0], "beyond the reference"
    # the reference point: the worst of each objective, a tenth of its range further
    assert reference_point([(1.0, 10.0), (3.0, 20.0)], ("minimize", "maximize")) == pytest.approx((3.2, 9.0))


def test_spearman_correlation() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)  # ranks, not values
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)  # ties take their mean rank
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None
    names, matrix = correlation({"a": [1, 2, 3, None], "b": [3, 2, 1, 0]})
    assert names == ["a", "b"] and matrix[0][1] == pytest.approx(-1.0) and matrix[0][0] == pytest.approx(1.0)


def test_timeline_shows_idle_workers_and_pruning_points() -> None:
    trials = [trial(0, worker="w1", start=0, end=4, steps=((0, 0.3),)),
              trial(1, "PRUNED", 0.2, worker="w2", start=0, end=2, steps=((0, 0.1), (1, 0.2))),
              trial(2, "FAIL", worker="w1", start=6, end=8)]
    rows = timeline(trials, 0.0, 8.0, 4)
    assert [t and t.number for t in rows["w1"]] == [0, 0, None, 2]
    assert [t and t.number for t in rows["w2"]] == [1, None, None, None]
    assert pruning_points(trials) == [(1, 0.2)]


def tiny(directions: tuple[str, ...] = ("maximize",)) -> Snapshot:
    lr = Param("lr", "float", log=True)
    return Snapshot("tiny", directions, tuple(f"m{i}" for i in range(len(directions))), (lr,),
                    (Trial(0, "COMPLETE", (0.5,) * len(directions), {"lr": 0.01}, 0.0, 1.0),))


def test_every_plot_says_what_it_waits_for() -> None:
    """With one completed trial no plot can be drawn: each says what will appear and why, in words."""
    console = Console(width=80, record=True)
    for directions in (("maximize",), ("maximize", "minimize")):
        snap = tiny(directions)
        for plot in plots_for(snap):
            if plot.name == "timeline":  # one trial that ran is a timeline already
                continue
            drawn = plot.draw(snap, View(), 80, 20)
            assert isinstance(drawn.body, Text), plot.name
            console.print(drawn.body)
            said = console.export_text()
            assert "appear" in said or "needs" in said, (plot.name, said)


def test_the_plots_are_all_there() -> None:
    assert {p.name for p in PLOTS} == {"history", "slice", "contour", "parallel", "intermediate", "timeline",
                                       "edf", "rank", "histogram", "correlation", "pareto", "hypervolume"}
    assert "pareto" not in {p.name for p in plots_for(tiny())}
    assert {"pareto", "hypervolume"} <= {p.name for p in plots_for(tiny(("maximize", "minimize")))}


def _text(widget: object, width: int = 200) -> str:
    """What a Static shows, as plain text, at `width`: wrapping text wraps, and a line that would
    not fit is kept whole (not cropped), so a line too long for the panel shows as too long."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(widget.content, crop=False)  # type: ignore[attr-defined]
    return console.export_text()


def test_the_analysis_screen_cycles_every_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One app: every plot of a single-objective study with pruned and failed trials, the keys that
    pick parameters and objectives, then a multi-objective study with its Pareto plots, each fitting 80x24."""
    from tui_hpo.app import make_app
    from tui_hpo.screens.analysis import AnalysisScreen, PlotPanel

    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    make_plot_study(tmp_path, "single")
    make_plot_study(tmp_path, "multi", directions=("maximize", "minimize"))
    read: list[Snapshot | None] = []

    def hook(message: object) -> None:
        if isinstance(message, AnalysisScreen.PlotsRead):
            read.append(message.snapshot)

    async def until(pilot: object, condition: object) -> None:
        for _ in range(300):
            if condition():  # type: ignore[operator]
                return
            await pilot.pause(0.05)  # type: ignore[attr-defined]
        raise AssertionError(f"not in time; worker errors: {pilot.app.worker_errors}")  # type: ignore[attr-defined]

    async def cycle(pilot: object, panel: PlotPanel, expected: set[str]) -> None:
        seen = set()
        for _ in range(len(panel.plots)):
            plot = panel.plot
            assert plot is not None
            seen.add(plot.name)
            assert f" {plot.title}: " in panel.border_title
            drawn = _text(panel)
            assert len(drawn.strip()) > 20, plot.name
            assert "appears with" not in drawn and "needs" not in drawn, (plot.name, drawn)
            await pilot.press("right_square_bracket")  # type: ignore[attr-defined]
        assert seen == expected

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, study="single", mode="analysis")
        async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
            screen = app.screen
            assert isinstance(screen, AnalysisScreen)
            panel = screen.query_one(PlotPanel)
            await until(pilot, lambda: panel.snapshot is not None and screen.analysis is not None)
            assert read[0] is None, "the panel says it is computing before the snapshot comes"
            assert screen.query_one("#analysis-top").display, "120x40: the tables and the plot together"
            single = {p.name for p in PLOTS if not p.multi_only}
            await cycle(pilot, panel, single)
            assert panel.plot.name == "history"  # type: ignore[union-attr]
            assert "pruned (" in _text(panel) and "fail (" in _text(panel)
            await pilot.press("right_square_bracket")  # the slice plot: p walks the parameters
            assert "by model (1/4, p: next)" in panel.border_title
            await pilot.press("p")
            assert "by lr (log) (2/4, p: next)" in panel.border_title
            await pilot.press("left_square_bracket", "left_square_bracket")  # back past the start: correlation
            assert panel.plot.name == "correlation"  # type: ignore[union-attr]
            await pilot.press("o")  # one objective: said, nothing moves
            assert panel.view.objective == 0
            await pilot.press("z")
            assert not screen.query_one("#analysis-top").display
            await pilot.press("z")
            assert screen.query_one("#analysis-top").display

            app.study_name = "multi"
            read.clear()
            await pilot.press("r")
            await until(pilot, lambda: panel.snapshot is not None and panel.snapshot.study == "multi")
            assert panel.snapshot.multi  # type: ignore[union-attr]
            await cycle(pilot, panel, {p.name for p in PLOTS})
            while panel.plot.name != "history":  # type: ignore[union-attr]
                await pilot.press("right_square_bracket")
            assert "val_f1 (objective 1 of 2)" in panel.border_title and "o objective" in panel.border_subtitle
            await pilot.press("o")
            assert "seconds (objective 2 of 2)" in panel.border_title

            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.1)
            assert not screen.query_one("#analysis-top").display, "80x24: the plot takes the screen"
            assert panel.region.height >= 14 and panel.region.right <= 80
            for _ in range(len(panel.plots)):
                width, height = panel.content_size
                lines = _text(panel, width).rstrip("\n").split("\n")
                name = panel.plot.name  # type: ignore[union-attr]
                assert max(len(line.rstrip()) for line in lines) <= width and len(lines) <= height, name
                await pilot.press("right_square_bracket")

    asyncio.run(scenario())
