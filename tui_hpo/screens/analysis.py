"""Analysis of the watched study: the top trials (or the Pareto front), parameter importance as
bars (Optuna's evaluator: PED-ANOVA), export of the best config as trainable files, and every plot
optuna-dashboard draws (tui_hpo.plots), cycled with keys in a panel that fits the terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from engine.artifacts import tta_path
from engine.config.space import train_params
from engine.storage import load_study
from engine.sweep.checkpoints import BEST
from tui_hpo.db import StudyRow
from tui_hpo.format import duration, number, params
from tui_hpo.plots import Plot, Snapshot, View, plots_for, read_snapshot
from tui_hpo.plots.snapshot import objective_names
from tui_hpo.screens.base import LiveScreen
from tui_hpo.tables import summary_text

TOP_N = 20
ZOOM_BELOW = 30  # terminal lines: below this the plot takes the screen (`z` swaps)


@dataclass(frozen=True)
class Analysis:
    study: StudyRow | None
    top: list[Any]  # FrozenTrial
    importance: dict[str, float] | None
    note: str = ""
    summary: dict[str, Any] | None = None  # engine.insights.summary.summary(): what `tui-hpo summary` prints
    next_sweep: Any = None  # engine.insights.recommend.Recommendation: what `tui-hpo recommend` writes
    ensemble: dict[str, Any] | None = None  # DIR/<study>/ensemble/ensemble.json, when `tui-hpo ensemble` ran
    tta: dict[str, Any] | None = None  # `tui-hpo evaluate` of the best model on its validation split
    metrics: tuple[str, ...] = ()  # one name per objective (tui_hpo.plots.snapshot.objective_names)


def tta_line(found: dict[str, Any] | None) -> str | None:
    """`tui-hpo evaluate`'s TTA comparison of the best model, in one line."""
    try:
        results = found["results"]  # type: ignore[index]
        base = results["none"]["accuracy"]
        said = ", ".join(f"{p} {r['accuracy']:.4f}" + ("" if p == "none" else f" ({(r['accuracy'] - base) * 100:+.2f})")
                         for p, r in results.items())
        return f"TTA on the best model, {found['images']} validation images: accuracy {said}"  # type: ignore[index]
    except (TypeError, KeyError):
        return None


def ensemble_line(manifest: dict[str, Any] | None) -> str | None:
    """`tui-hpo ensemble`'s result in one line, from its package's manifest."""
    try:
        metrics, members = manifest["metrics"], manifest["members"]  # type: ignore[index]
        test = metrics.get("test")
        tested = (f"; {test['ensemble']['macro_f1']:.4f} on {test['images']} test images, best member "
                  f"{max(m['macro_f1'] for m in test['members']):.4f}") if test else ""
        if metrics.get("kind") == "folds":
            return (f"{len(members)}-fold ensemble of trial {members[0]['trial']} ({manifest['method']}): "  # type: ignore[index]
                    f"out-of-fold macro-F1 {metrics['out_of_fold']['macro_f1']:.4f}{tested}")
        together, single = metrics["ensemble"], metrics["best_single"]
        gain = together["macro_f1"] - single["macro_f1"]
        return (f"top-{len(manifest['members'])} ensemble ({manifest['method']}): macro-F1 "  # type: ignore[index]
                f"{together['macro_f1']:.4f} against {single['macro_f1']:.4f} for the best single model (trial "
                f"{single['trial']}), {gain * 100:+.2f} points{tested}")
    except (TypeError, KeyError, AttributeError, ValueError):
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def analyse(url: str, study: StudyRow, workdir: Path | None = None, loaded: Any = None) -> Analysis:
    """The same functions as `tui-hpo summary`, `top` and `importance`, so screen and CLI agree;
    and the ensemble `tui-hpo ensemble` wrote into `workdir`/<study>/, if any. `loaded`: the
    optuna.Study when the caller has it already."""
    import optuna

    from engine.errors import UserError
    from engine.insights.summary import importance as param_importance
    from engine.insights.summary import summary

    loaded = loaded or load_study(url, study.name, readonly=True)
    complete = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    metrics = objective_names(loaded, study.metrics)
    if len(loaded.directions) > 1:
        top = sorted(loaded.best_trials, key=lambda t: t.number)
        note = f"Pareto front: {len(top)} trial(s) trade {' against '.join(metrics)}"
    else:
        reverse = loaded.direction == optuna.study.StudyDirection.MAXIMIZE
        top = sorted(complete, key=lambda t: t.value, reverse=reverse)[:TOP_N]
        note = f"top {len(top)} of {len(complete)} completed trial(s)"
    importance = None
    if len(complete) >= 2:  # of the first objective where there are several (as `tui-hpo importance`)
        try:
            importance = param_importance(loaded)
            if len(loaded.directions) > 1:
                note += f"; importance: of {metrics[0]}"
        except UserError as exc:
            note += f"; importance: {exc.detail}"
    folder = workdir / study.name if workdir is not None else None
    return Analysis(study, top, importance, note, summary(loaded, url), _recommendation(url, loaded),
                    read_json(folder / "ensemble" / "ensemble.json") if folder else None,
                    read_json(tta_path(folder / BEST)) if folder else None, metrics)


def _recommendation(url: str, study: Any) -> Any:
    from engine.errors import UserError
    from engine.insights.recommend import recommend
    from engine.insights.summary import saved_config

    config = saved_config(url, study.study_name)
    try:
        return recommend(study, config) if config is not None else None
    except UserError:  # no completed trial yet
        return None


class PlotPanel(Static):
    """One plot of a study snapshot at a time, drawn at the panel's size (again on resize); each
    drawing is kept until the snapshot changes, so cycling back and forth costs nothing."""

    def on_mount(self) -> None:
        self.snapshot: Snapshot | None = None
        self.computing = True
        self.index = 0
        self.view = View()
        self._drawn: dict[tuple[str, View, int, int], tuple[str, RenderableType]] = {}
        self.redraw()

    @property
    def plots(self) -> list[Plot]:
        return plots_for(self.snapshot) if self.snapshot is not None else []

    @property
    def plot(self) -> Plot | None:
        plots = self.plots
        return plots[self.index % len(plots)] if plots else None

    def reading(self) -> None:
        """A new version of the study is being read: say so (over the plot of the last one)."""
        self.computing = True
        self.redraw()

    def show_snapshot(self, snapshot: Snapshot | None) -> None:
        """The new version of the study (None: there is no study)."""
        self.snapshot, self.computing, self._drawn = snapshot, False, {}
        self.redraw()

    def move(self, plots: int = 0, param: int = 0, objective: int = 0) -> None:
        n_objectives = len(self.snapshot.directions) if self.snapshot is not None else 1
        self.index += plots
        self.view = View((self.view.objective + objective) % n_objectives, self.view.param + param,
                         not self.app.no_color)
        self.redraw()

    def on_resize(self, event: events.Resize) -> None:
        self.redraw()

    def redraw(self) -> None:
        plot, width, height = self.plot, self.content_size.width, self.content_size.height
        if plot is None or self.snapshot is None:
            self.border_title = "plots"
            self.border_subtitle = ""
            self.update(Text("computing the plots… (reading the study in the background)" if self.computing else
                             "no study to plot yet", style="dim italic"))
            return
        if width < 10 or height < 3:
            return
        view = View(self.view.objective, self.view.param, not self.app.no_color)
        key = (plot.name, view, width, height)
        if key not in self._drawn:
            drawn = plot.draw(self.snapshot, view, width, height)
            self._drawn[key] = (drawn.caption, drawn.body)
        caption, body = self._drawn[key]
        plots = self.plots
        self.border_title = f"{self.index % len(plots) + 1}/{len(plots)} {plot.title}: {caption}"
        keys = ["[ ] plot"] + (["p " + plot.about] if plot.about else []) + \
            (["o objective"] if self.snapshot.multi else []) + ["z zoom"]
        self.border_subtitle = ("computing… · " if self.computing else "") + " · ".join(keys)
        self.update(body)


class AnalysisScreen(LiveScreen):
    CSS_PATH = "analysis.tcss"
    POLL_S = 3.0

    BINDINGS = [Binding("e", "export", "export results"), Binding("n", "next_sweep", "next sweep"),
                Binding("r", "refresh", "recompute"),
                Binding("right_square_bracket", "plot(1)", "next plot", key_display="]"),
                Binding("left_square_bracket", "plot(-1)", "previous plot", key_display="["),
                Binding("p", "param", "next parameter(s)", show=False),
                Binding("o", "objective", "next objective", show=False),
                Binding("z", "zoom", "zoom plot", show=False)]

    class PlotsRead(Message, bubble=False):
        """A new snapshot of the study for the plots (None: reading one has begun)."""

        def __init__(self, snapshot: Snapshot | None) -> None:
            super().__init__()
            self.snapshot = snapshot

    def compose(self) -> ComposeResult:
        yield Static(Text("reading the study…", style="dim italic"), id="analysis-header", classes="bar")
        with Horizontal(id="analysis-top"):
            yield DataTable(id="analysis-table", classes="framed", cursor_type="row", zebra_stripes=True)
            with Vertical(id="analysis-side"):
                yield Static(Text("computing…", style="dim italic"), id="importance", classes="panel")
                yield Static(Text("computing…", style="dim italic"), id="next-sweep", classes="panel")
        yield PlotPanel(id="plot", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#analysis-table").border_title = "best trials"
        self.query_one("#importance").border_title = "parameter importance (PED-ANOVA)"
        self.query_one("#next-sweep").border_title = "next sweep (n writes it)"
        self._key: Any = None
        self.analysis: Analysis | None = None
        self.flipped = False  # `z` pressed an odd number of times: the other layout than the terminal's
        self._fit()

    def on_screen_resume(self) -> None:
        self._key = None  # analysed afresh each time the screen is shown

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """The plot alone on a short terminal, with the tables otherwise; `z` swaps the two."""
        zoomed = (self.app.size.height < ZOOM_BELOW) != self.flipped
        self.query_one("#analysis-top").display = not zoomed

    def read(self) -> Analysis:
        name = self.app.study_name
        studies = self.app.reader.studies()
        study = next((s for s in studies if s.name == name), None) if name else (studies[-1] if studies else None)
        key = (study.name, study.done, study.total) if study else None
        if key == self._key:
            return Analysis(None, [], None, "unchanged")
        self._key = key
        if study is None:
            return Analysis(None, [], None)
        self.post_message(self.PlotsRead(None))
        loaded = load_study(self.app.url, study.name, readonly=True)
        # the plots first: importance and the recommendation take seconds more on a large study
        self.post_message(self.PlotsRead(read_snapshot(loaded, study.metrics)))
        return analyse(self.app.url, study, self.app.workdir, loaded)

    @on(PlotsRead)
    def _plots_read(self, message: PlotsRead) -> None:
        panel = self.query_one(PlotPanel)
        if message.snapshot is None:
            panel.reading()
        else:
            panel.show_snapshot(message.snapshot)

    def show(self, result: Analysis) -> None:
        if result.note == "unchanged":
            return
        header = self.query_one("#analysis-header", Static)
        if result.study is None:
            header.update(Text("No study yet: start one from the wizard (2).", style="bold"))
            self.query_one(PlotPanel).show_snapshot(None)
            return
        self.analysis = result
        study = result.study
        text = summary_text(result.summary) if result.summary else Text(f" {study.name}", style="bold")
        text.append(f"\n {result.note}", style="dim")
        for said in (ensemble_line(result.ensemble), tta_line(result.tta)):
            if said:
                text.append(f"\n {said}")
        header.update(text)
        table = self.query_one("#analysis-table", DataTable)
        table.clear(columns=True)
        table.add_column("#", key="n")
        for metric in result.metrics:
            table.add_column(metric)
        table.add_column("time")
        table.add_column("params")
        for trial in result.top:
            table.add_row(str(trial.number), *(number(v) for v in trial.values),
                          duration(trial.duration.total_seconds() if trial.duration else None),
                          params(train_params(trial.params)))
        self.query_one("#importance", Static).update(_bars(result.importance, self.size.width // 2 - 30))
        self.query_one("#next-sweep", Static).update(_next(result.next_sweep))

    def action_refresh(self) -> None:
        self._key = None
        self.poll()

    def action_plot(self, step: int) -> None:
        self.query_one(PlotPanel).move(plots=step)

    def action_param(self) -> None:
        panel = self.query_one(PlotPanel)
        if panel.plot is None or not panel.plot.about:
            self.notify("p picks the parameter of the slice plot and the pair of the contour and rank plots")
            return
        panel.move(param=1)

    def action_objective(self) -> None:
        panel = self.query_one(PlotPanel)
        if panel.snapshot is None or not panel.snapshot.multi:
            self.notify("o picks the objective when a study has several; this one has one")
            return
        panel.move(objective=1)

    def action_zoom(self) -> None:
        self.flipped = not self.flipped
        self._fit()

    def _writable_study(self) -> StudyRow | None:
        """The analysed study, if its name can be a folder of the workspace (a plain Optuna study
        may be named `../x`: such a name is refused, never followed)."""
        from engine.config import check_study_name
        from engine.errors import UserError

        if self.analysis is None or self.analysis.study is None:
            return None
        try:
            check_study_name(self.analysis.study.name, "study")
        except UserError as exc:
            self.notify(f"{exc}: use tui-hpo export --out DIR", severity="warning")
            return None
        return self.analysis.study

    def action_export(self) -> None:
        study = self._writable_study()
        if study is not None:
            self.export(study)

    @work(thread=True, exit_on_error=False, group="analysis-export")
    def export(self, study: StudyRow) -> None:
        """What `tui-hpo export` writes, into the study's folder."""
        from engine.insights.results import export_results
        from engine.insights.summary import saved_config

        folder = self.app.workdir / study.name
        written = export_results(load_study(self.app.url, study.name, readonly=True),
                                 saved_config(self.app.url, study.name), folder, self.app.url)
        self.app.call_from_thread(self.notify, "wrote " + ", ".join(p.name for p in written) + f" to {folder}")

    def action_next_sweep(self) -> None:
        study = self._writable_study()
        if study is None:
            return
        if self.analysis is None or self.analysis.next_sweep is None:
            self.notify("a focused sweep needs a completed trial of a tui-hpo sweep", severity="warning")
            return
        self.next_sweep(study, self.analysis.next_sweep)

    @work(thread=True, exit_on_error=False, group="analysis-export")
    def next_sweep(self, study: StudyRow, result: Any) -> None:
        """What `tui-hpo recommend` writes, from the recommendation the panel shows."""
        from engine.insights.recommend import write_recommendation

        path = self.app.workdir / study.name / "recommended.yaml"
        write_recommendation(result, path)
        changed = "; ".join(f"{c.name} {c.after}" for c in result.changes)
        self.app.call_from_thread(self.notify, f"{changed}\nwrote {path}", title="next sweep", timeout=15)


def _bars(importance: dict[str, float] | None, width: int) -> Table | Text:
    if not importance:
        return Text("needs at least two completed trials with different params", style="dim")
    from tui_hpo.tables import importance_table

    return importance_table(importance, "", max(10, width))


def _next(result: Any) -> Group | Text:
    """The focused ranges `tui-hpo recommend` would write, parameter by parameter."""
    if result is None:
        return Text("a focused sweep needs a completed trial of a tui-hpo sweep", style="dim")
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for change in result.changes:
        table.add_row(change.name, Text(change.after, style="green" if change.after != change.before else ""))
    return Group(Text(f"the ranges of the top {result.top} of {result.completed} completed trials", style="dim"),
                 table)
