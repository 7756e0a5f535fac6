"""The live dashboard: study header, trial table, system gauges, history and learning curves; in a
sweep of a program, `o` shows the selected trial's last output lines in place of the charts.

Polling follows the chain-of-one-shot-timers pattern: a thread worker reads the database and
posts a `Snapshot`; the handler draws and schedules the next poll. Polls never overlap, and no
poll runs while this screen is not the one shown.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

from engine.insights.gpu import gpu_usage
from engine.insights.validation import balance, too_small
from engine.storage.states import ACTIVE, FINISHED_TRIALS, RECENT_DURATIONS, SweepState, eta_seconds
from tui_hpo import clock
from tui_hpo.db import Event, Reader, Sample, StudyRow, TrialFeed, TrialRow, Trials
from tui_hpo.format import duration, number, params
from tui_hpo.screens import actions
from tui_hpo.screens.base import LiveScreen
from tui_hpo.widgets.chart import Chart
from tui_hpo.widgets.gauges import Gauges
from tui_hpo.widgets.log_tail import tail_lines, trial_log
from tui_hpo.widgets.trial_table import STATE_STYLE as TRIAL_STYLE
from tui_hpo.widgets.trial_table import STATE_SYMBOL, TrialTable

MAX_POINTS = 600
OUTPUT_LINES = 30  # the output panel's lines read a tick (it shows what fits, the newest)


@dataclass(frozen=True)
class Output:
    """The last lines a trial's program wrote, for the output panel."""

    number: int
    state: str
    path: Path | None  # None: the trial has no log (the built-in trainer's, or not started yet)
    lines: list[str]


@dataclass(frozen=True)
class Snapshot:
    study: StudyRow | None  # its counts and best from `trials` (the feed has every trial already)
    samples: list[Sample]
    curves: dict[int, list[tuple[int, float]]]
    events: list[Event]
    total_epochs: int
    took_ms: float = 0.0
    trials: Trials | None = None
    version: int = 0
    backlog: bool = False  # older trials are still being read, a page a poll
    total: int = 0  # the study's trials when the feed counted them (for "loading n of total")
    gpu_busy: float | None = None  # mean GPU utilisation over the last GPU_WINDOW_S; None without GPUs
    split: dict[str, Any] | None = None  # the data split the engine stored (Reader.split); None until it has
    program: bool | None = None  # whether the sweep runs a program (objective.command); None: not read this tick
    output: Output | None = None  # the selected trial's output, while the panel is shown


GPU_WINDOW_S = 30.0


class DashboardScreen(LiveScreen):
    CSS_PATH = "dashboard.tcss"
    POLL_S = 1.0

    BINDINGS = [
        Binding("p", "pause", "pause"),
        Binding("x", "stop", "stop"),
        Binding("k", "prune", "prune"),
        Binding("plus,equals_sign", "budget(1)", "budget", key_display="+"),
        Binding("minus", "budget(-1)", "budget", key_display="-", show=False),
        Binding("g", "panel('gauges')", "gauges", show=False, tooltip="show / hide the system gauges"),
        Binding("e", "panel('events')", "events", show=False, tooltip="show / hide the events"),
        Binding("o", "output", "output"),
        Binding("a", "enqueue", "enqueue a trial", show=False),
        Binding("r", "retry", "fail and retry", show=False),
        Binding("y", "copy", "copy params", show=False),
        Binding("n", "note", "trial note", show=False),
        Binding("N", "study_note", "study note", show=False),
        Binding("v", "compare", "compare (v, v)", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.feed: TrialFeed | None = None
        self.study: StudyRow | None = None
        self.last_event = 0
        self.events: list[Event] = []
        self.tick_ms = 0.0
        self.applied: tuple[int, int] = (0, 0)  # (study id, feed version) the table shows
        self.split: tuple[int, dict[str, Any]] | None = None  # (study id, its split), read until stored
        self.program = False  # the study's trials run a program, so they have output logs
        self.output_for: int | None = None  # the trial whose output the panel shows; None: panel hidden
        self._logs: dict[int, Path] = {}  # trial id -> its output.log, once the worker stored it
        self.marked: tuple[int, int] | None = None  # (study id, trial number) `v` marked to compare
        self.panels: dict[str, bool] = {}  # gauges / events shown, where the user toggled them (`g`, `e`)
        self._history_key: tuple[int, ...] | None = None  # what the objective-by-trial chart shows

    def compose(self) -> ComposeResult:
        yield Static(id="dash-header", classes="bar")
        with Horizontal(id="dash-main"):
            yield TrialTable(id="trials", classes="framed")
            with Vertical(id="dash-side"):
                yield Gauges(id="gauges", classes="panel")
                yield Static(id="events", classes="panel")
        with Horizontal(id="dash-charts"):
            yield Chart("objective by trial: · complete + pruned x failed, line: best", id="history", classes="framed")
            yield Chart("learning curves: running and best", id="curves", classes="framed")
            yield Static(id="dash-output", classes="framed")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#events", Static).border_title = "events"
        self.query_one("#gauges", Gauges).border_title = "system"
        self._place_panels()

    # ------------------------------------------------------------ polling

    def read(self) -> Snapshot:
        study_name, output_for = self.app.study_name, self.output_for
        started = time.perf_counter()
        reader: Reader = self.app.reader
        # Counts and best come from the feed once it holds every trial (no scan of them all a tick);
        # while its backlog loads, from the database.
        studies = reader.studies(stats=self.feed is None or self.feed.backlog)
        study = next((s for s in studies if s.name == study_name), None) if study_name else \
            (studies[-1] if studies else None)
        if study is None:
            return Snapshot(None, reader.latest_samples(), {}, [], 0)
        if self.feed is None or self.feed.study_id != study.study_id:
            self.feed = TrialFeed(reader, study.study_id)
            self.last_event = 0
        self.feed.poll()
        trials = self.feed.trials
        best = trials.best(study.directions)
        if not self.feed.backlog:
            study = replace(study, counts=trials.counts(),
                            best=float(trials.values[best, 0]) if best is not None else None)
        running = trials.trial_id[trials.with_state("RUNNING")].tolist()
        curve_ids = running[:8] + ([int(trials.trial_id[best])] if best is not None else [])
        config = reader.sweep_config(study.study_id) if self.study is None or self.study.study_id != study.study_id \
            else None
        total_epochs = _total_epochs(config) if config is not None else self._total_epochs
        program = bool((config.get("objective") or {}).get("command")) if config is not None else None
        events = reader.events(study.study_id, self.last_event, limit=50)
        recent = [asdict(x) for x in reader.samples_between(clock.now() - GPU_WINDOW_S, clock.now())]
        usage = gpu_usage(recent)
        known = self.split
        split = known[1] if known and known[0] == study.study_id else reader.split(study.study_id)
        output = self._output(reader, study, trials.row(output_for)) if output_for is not None else None
        return Snapshot(
            study=study, samples=reader.latest_samples(), curves=reader.intermediate(curve_ids),
            events=events, total_epochs=total_epochs, took_ms=(time.perf_counter() - started) * 1000, trials=trials,
            version=self.feed.version, backlog=self.feed.backlog, total=self.feed.total or 0,
            gpu_busy=usage["busy_percent"] if usage else None, split=split, program=program, output=output)

    def _output(self, reader: Reader, study: StudyRow, row: TrialRow | None) -> Output | None:
        """The last lines of a trial's output.log (in the worker thread). Its path is read once it
        is stored; the file is read from its end, so a tick costs the same at any size."""
        if row is None:
            return None
        path = self._logs.get(row.trial_id)
        if path is None:
            path = trial_log(reader.trial_attrs(row.trial_id, ("log",)).get("log"), self.app.workdir, study.name,
                             row.number)
            if path is not None:
                self._logs[row.trial_id] = path
        return Output(row.number, row.state, path, tail_lines(path, OUTPUT_LINES) if path else [])

    _total_epochs = 0

    def show(self, snap: Snapshot) -> None:
        started = time.perf_counter()
        try:
            self._draw(snap)
        finally:
            self.tick_ms = snap.took_ms + (time.perf_counter() - started) * 1000

    def _draw(self, snap: Snapshot) -> None:
        self.query_one(Gauges).show(snap.samples)
        header = self.query_one("#dash-header", Static)
        if snap.study is None:
            header.update(Text("No study in this workspace yet. Start one from the wizard, or with "
                               "`tui-hpo run` (it appears here).", style="bold"))
            return
        study, trials = snap.study, snap.trials or Trials()
        self.study = study
        self._total_epochs = snap.total_epochs
        if snap.program is not None and snap.program != self.program:  # another study
            self.program = snap.program
            if not self.program and self.output_for is not None:
                self.action_output()
            self.refresh_bindings()
        table = self.query_one(TrialTable)
        if self.applied[0] != study.study_id:
            table.reset(self.app.workdir / study.name / "tui.json")
            self.events = []
        at = trials.best(study.directions)
        best = trials.row_at(at) if at is not None else None
        table.show(trials, snap.version, study.metrics if study.directions else ("value",), snap.total_epochs,
                   best.number if best else None)
        table.border_subtitle = f"loading {trials.n:,} of {snap.total:,} trials" if snap.backlog else \
            (f"{table.row_count:,} of {trials.n:,}: {table.view.query}" if table.view.query else f"{trials.n:,} trials")
        self.POLL_S = 0.01 if snap.backlog else type(self).POLL_S  # the backlog's next page at once
        self.applied = (study.study_id, snap.version)
        if snap.split is not None:
            self.split = (study.study_id, snap.split)
        header.update(_header(study, best, trials, snap.gpu_busy, snap.split, header.size.width or self.size.width))
        if snap.events:
            self.last_event = snap.events[-1].id
            # Trial starts are in the table already; the panel keeps outcomes and commands.
            merged = {e.id: e for e in self.events + [e for e in snap.events if e.kind != "trial"]}
            self.events = sorted(merged.values(), key=lambda e: e.id)[-50:]
            self.query_one("#events", Static).update(_events_text(self.events))
        self._charts(study, trials, snap.curves, best)
        if self.output_for is not None:
            self._show_output(snap.output)

    def _show_output(self, output: Output | None) -> None:
        """The selected trial's last lines, the newest at the bottom, as many as the panel holds."""
        box = self.query_one("#dash-output", Static)
        if output is None or output.number != self.output_for:  # the cursor moved on meanwhile
            return
        box.border_title = Text(f"output of trial {output.number} ({output.state.lower()})")
        box.border_subtitle = Text("o: charts")
        if output.path is None:
            box.update(Text("no output log (yet): the trial has not started its program", style="dim"))
            return
        if not output.lines:
            box.update(Text("no output yet", style="dim"))
            return
        height = max(1, box.content_size.height)
        box.update(Text("\n".join(output.lines[-height:])))

    def _charts(self, study: StudyRow, trials: Trials, curves: dict[int, list[tuple[int, float]]],
                best: TrialRow | None) -> None:
        # Finished trials never change, so the history changes only when one more finishes (not at
        # each epoch of a running one): plotext's drawing is the costliest part of a tick.
        finished = trials.counts()
        key = (study.study_id, trials.n, *(finished.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL")))
        if key != self._history_key:
            self._history_key = key
            maximize = not study.directions or study.directions[0] == "maximize"
            series = _history(trials, maximize)
            if series is not None:
                def draw_history(plt: Any) -> None:
                    for xs, ys, marker, color in series.points:
                        plt.scatter(xs, ys, marker=marker, color=color)
                    plt.plot(*series.best, color="green", marker="braille")
                    plt.xlabel("trial")

                self.query_one("#history", Chart).plot(draw_history, key)
            else:
                self.query_one("#history", Chart).plot(None, None)
        curve_chart = self.query_one("#curves", Chart)
        rows = [(trials.row_at(at), pts) for tid, pts in curves.items() if pts
                for at in trials.at([tid]).tolist() if at < trials.n and trials.trial_id[at] == tid]
        first, xlabel = (0, "step") if self.program else (1, "epoch")  # a program's steps as it numbers them
        if rows:
            def draw_curves(plt: Any) -> None:
                for row, pts in rows:
                    label = f"#{row.number}" + (" best" if best and row.number == best.number else "")
                    plt.plot([p[0] + first for p in pts], [p[1] for p in pts], label=label, marker="braille")
                plt.xlabel(xlabel)

            curve_chart.plot(draw_curves, tuple((r.number, len(p), p[-1][1]) for r, p in rows))
        else:
            curve_chart.plot(None, None)

    # ------------------------------------------------------------ actions

    def _require_sweep(self) -> StudyRow | None:
        if self.study is None or self.study.state == SweepState.EXTERNAL:
            self.notify("this study was not created by tui-hpo: it cannot be steered", severity="warning")
            return None
        return self.study

    def action_pause(self) -> None:
        study = self._require_sweep()
        if study is None:
            return
        if study.state == SweepState.PAUSED:
            self.app.control.resume(study.study_id)
            self.notify("resumed: new trials start again")
        elif study.state == SweepState.RUNNING:
            self.app.control.pause(study.study_id)
            self.notify("paused: running trials finish, no new trial starts (p resumes)")
        else:
            self.notify(f"the sweep is {study.state}", severity="warning")

    def action_stop(self) -> None:
        study = self._require_sweep()
        if study is not None and study.state in ACTIVE:
            self.app.control.stop(study.study_id)
            self.notify("stopping: running trials end now and rerun on resume")

    def action_prune(self) -> None:
        study = self._require_sweep()
        number_ = self.query_one(TrialTable).selected_number()
        if study is None or number_ is None or self.feed is None:
            return
        row = self.feed.rows.get(number_)
        if row is None or row.state != "RUNNING":
            self.notify("select a running trial to prune it", severity="warning")
            return
        self.app.control.prune(study.study_id, number_)
        self.notify(f"trial {number_} will be pruned after its current epoch")

    def action_budget(self, delta: int) -> None:
        study = self._require_sweep()
        if study is None:
            return
        floor = study.done + study.counts.get("RUNNING", 0)
        n_trials = self.app.control.change_budget(study.study_id, delta, floor)
        self.notify(f"budget: {n_trials} trials")

    def action_panel(self, name: str) -> None:
        """Show or hide the gauges or the events beside the table (below 100 columns both start
        hidden, so the table has the width)."""
        self.panels[name] = not self.query_one(f"#{name}").display
        self._place_panels()

    def _place_panels(self) -> None:
        wide = self.app.size.width >= 100 and self.app.size.height >= 30  # the app's -narrow, which may lag a resize
        shown = {name: self.panels.get(name, wide) for name in ("gauges", "events")}
        self.query_one("#gauges").display = shown["gauges"]
        self.query_one("#events").display = shown["events"]
        self.query_one("#dash-side").display = any(shown.values())

    def on_resize(self) -> None:
        self._place_panels()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`o` only where trials have output: a sweep of a program."""
        return self.program if action == "output" else True

    def action_output(self) -> None:
        """The selected trial's output in place of the charts, or the charts again."""
        if self.output_for is not None:
            self.output_for = None
            self.remove_class("-output")
            return
        selected = self.query_one(TrialTable).selected_number()
        if selected is None:
            self.notify("no trial to show the output of yet", severity="warning")
            return
        self.add_class("-output")
        self._follow(selected)

    def _selected_row(self) -> TrialRow | None:
        number_ = self.query_one(TrialTable).selected_number()
        return self.feed.rows.get(number_) if self.feed is not None and number_ is not None else None

    def action_enqueue(self) -> None:
        if self.study is not None:
            actions.enqueue(self, self.study, self._selected_row())

    def action_retry(self) -> None:
        row = self._selected_row()
        if self.study is not None and row is not None:
            actions.retry(self, self.study, row)

    def action_copy(self) -> None:
        row = self._selected_row()
        if row is not None:
            actions.copy_params(self, row)

    def action_note(self) -> None:
        row = self._selected_row()
        if self.study is not None and row is not None:
            actions.edit_note(self, self.study, row)

    def action_study_note(self) -> None:
        if self.study is not None:
            actions.edit_note(self, self.study, None)

    def action_compare(self) -> None:
        """The first `v` marks the selected trial; `v` on another compares the two."""
        row, study = self._selected_row(), self.study
        if row is None or study is None or self.feed is None:
            return
        marked = self.feed.rows.get(self.marked[1]) if self.marked and self.marked[0] == study.study_id else None
        if marked is None or marked.number == row.number:
            self.marked = (study.study_id, row.number)
            self.notify(f"trial {row.number} marked: v on another trial compares the two")
            return
        self.marked = None
        from tui_hpo.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(study, marked, row))

    @on(TrialTable.Highlighted)
    def _selected(self, event: TrialTable.Highlighted) -> None:
        """The panel follows the cursor: the newly selected trial's output is read at once."""
        if self.output_for is not None and event.number != self.output_for:
            self._follow(event.number)

    def _follow(self, number_: int) -> None:
        self.output_for = number_
        box = self.query_one("#dash-output", Static)
        box.border_title = Text(f"output of trial {number_}")
        box.update(Text("reading ...", style="dim"))
        self.poll()

    @on(TrialTable.Selected)
    def open_trial(self, event: TrialTable.Selected) -> None:
        if self.study is not None:
            from tui_hpo.screens.trial import TrialScreen

            self.app.push_screen(TrialScreen(self.study, event.number))


@dataclass(frozen=True)
class History:
    """The objective-by-trial chart's data: scatter series (xs, ys, marker, colour) and the
    best-so-far line, which runs to the newest trial so the x axis spans every trial number."""

    points: list[tuple[list[int], list[float], str, str]]
    best: tuple[list[int], list[float]]


def _history(trials: Trials, maximize: bool) -> History | None:
    """Every finished trial at its number: completed ones as dots, pruned ones (at the value they
    were pruned at) as +, failed ones (no value) as x along the bottom; the best so far as a line
    through the completed ones. At most MAX_POINTS a series; the line keeps only its steps."""
    first = trials.values[:, 0]
    complete = trials.with_state("COMPLETE") & ~np.isnan(first)
    if not complete.any():
        return None
    pruned = trials.with_state("PRUNED") & ~np.isnan(first)
    failed = trials.with_state("FAIL")
    floor = float(np.nanmin(first[complete | pruned]))
    points = []
    for mask, marker, color in ((complete, "dot", "cyan"), (pruned, "+", "yellow"), (failed, "x", "red")):
        at = np.flatnonzero(mask)[:: max(1, int(mask.sum()) // MAX_POINTS)]
        if len(at):
            ys = first[at] if marker != "x" else np.full(len(at), floor)
            points.append((trials.number[at].tolist(), ys.tolist(), marker, color))
    at = np.flatnonzero(complete)
    at = at[np.argsort(trials.number[at], kind="stable")]
    running = (np.maximum if maximize else np.minimum).accumulate(first[at])
    steps = np.flatnonzero(np.diff(running, prepend=np.nan) != 0)  # where the best changed (and the first)
    xs = [*trials.number[at][steps].tolist(), int(trials.number.max())]
    ys = [*running[steps].tolist(), float(running[-1])]
    return History(points, (xs, ys))


def _total_epochs(config: dict[str, Any]) -> int:
    train = config.get("train") or {}
    folds = (config.get("data") or {}).get("folds", 1)
    return int(train.get("epochs", 0)) * int(folds or 1)


STATE_STYLE = {SweepState.RUNNING: "bold green", SweepState.PAUSED: "bold yellow", SweepState.STOPPING: "bold red",
               SweepState.STOPPED: "red", SweepState.FINISHED: "bold cyan", SweepState.EXTERNAL: "dim"}


def _header(study: StudyRow, best: TrialRow | None, trials: Trials, gpu_busy: float | None = None,
            split: dict[str, Any] | None = None, width: int = 120) -> Text:
    """Two lines (the bar cuts each with an ellipsis where it does not fit: never a third line): the
    sweep's progress, then the GPU use and the best trial. Below 100 columns the counts use the
    table's state symbols."""
    c = study.counts
    short = width < 100
    line = Text()
    line.append(f" {study.name} ", style="bold reverse")
    line.append(f" {study.state} ", style=STATE_STYLE.get(study.state, ""))
    total = f"/{study.n_trials}" if study.n_trials else ""
    line.append(f" {study.done}{total}{'' if short else ' done'}  ")
    for state, word in (("RUNNING", "running"), ("PRUNED", "pruned"), ("FAIL", "failed")):
        count = c.get(state, 0)
        line.append(f"{count}{STATE_SYMBOL[state]} " if short else f"{count} {word}  ", style=TRIAL_STYLE[state])
    now = clock.now()
    if study.created:
        end = now if study.state in (*ACTIVE, SweepState.STOPPING) else (study.updated or now)
        line.append(f"{'' if short else ' elapsed '}{duration(end - study.created)}")
    eta = _eta(study, trials)
    if eta is not None:
        line.append(f"  ETA {duration(eta)}")
    if split:
        line.append("  ")
        line.append_text(_split_text(split))
    second = Text()
    if gpu_busy is not None:  # first on its line: the figure a GPU sweep is judged by, never cut away
        second.append(f" GPU busy {gpu_busy:.0f}% ", style="bold" if gpu_busy >= 60 else "bold yellow")
    if best is not None:
        second.append(f" best {study.metrics[0] if study.metrics else 'value'} ", style="bold")
        second.append(f"{number(best.values[0])} ", style="bold green")
        second.append(f"(trial {best.number})  ", style="bold")
        second.append(params(best.params), style="dim")
    elif len(study.directions) > 1:
        second.append(" several objectives: see the Pareto front in the analysis", style="dim")
    else:
        second.append(" no completed trial yet", style="dim")
    return Text("\n").join([line, second])


def _split_text(split: dict[str, Any]) -> Text:
    """`val 54 (18/18/18)`: what each trial is judged on, marked when too small to rank trials
    (engine.insights.validation, the verdict `tui-hpo summary` spells out)."""
    per_class = balance(split, "/class", spell_out=4)
    text = f"val {split['val']}" + (f" ({per_class})" if per_class else "")
    folds = int(split.get("folds") or 1)
    text += f" in {folds} folds" if folds > 1 else ""
    if not too_small(split):
        return Text(text)
    return Text.assemble((text, "yellow"), (" too small", "bold yellow"))


def _eta(study: StudyRow, trials: Trials) -> float | None:
    if not study.n_trials or study.state not in ACTIVE:
        return None
    return eta_seconds(trials.cached("recent", lambda: _recent_durations(trials)), study.n_trials, study.done,
                       study.counts.get("RUNNING", 0))


def _recent_durations(trials: Trials) -> list[float]:
    """How long the newest finished trials took (the ETA's pace)."""
    finished = np.flatnonzero(trials.with_state(*FINISHED_TRIALS))
    spans = (trials.complete - trials.start)[finished[np.argsort(trials.number[finished], kind="stable")]]
    return spans[spans > 0][-RECENT_DURATIONS:].tolist()


def _events_text(events: list[Event]) -> Text:
    """Newest first, so a short panel still shows what just happened."""
    text = Text()
    for event in reversed(events[-20:]):
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        style = {"warning": "yellow", "error": "bold red"}.get(event.level, "")
        text.append(f"{stamp} ", style="dim")
        text.append(event.message + "\n", style=style)
    return text
