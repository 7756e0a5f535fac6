"""The live dashboard: study header, trial table, system gauges, history and learning curves; in a
sweep of a program, `o` shows the selected trial's last output lines in place of the charts.

Polling follows the chain-of-one-shot-timers pattern: a thread worker reads the database and
posts a `Snapshot`; the handler draws and schedules the next poll. Polls never overlap, and no
poll runs while this screen is not the one shown.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from tui_hpo.db import Event, Reader, Sample, StudyRow, TrialFeed, TrialRow
from tui_hpo.format import duration, number, params
from tui_hpo.screens.base import LiveScreen
from tui_hpo.widgets.chart import Chart
from tui_hpo.widgets.gauges import Gauges
from tui_hpo.widgets.log_tail import tail_lines, trial_log
from tui_hpo.widgets.trial_table import TrialTable

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
    study: StudyRow | None
    changed: list[TrialRow]
    samples: list[Sample]
    curves: dict[int, list[tuple[int, float]]]
    events: list[Event]
    total_epochs: int
    took_ms: float = 0.0
    rows: dict[int, TrialRow] = field(default_factory=dict)
    version: int = 0
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
        Binding("s", "sort", "sort", show=False),
        Binding("f", "filter", "filter", show=False),
        Binding("o", "output", "output"),
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

    def compose(self) -> ComposeResult:
        yield Static(id="dash-header", classes="bar")
        with Horizontal(id="dash-main"):
            yield TrialTable(id="trials", classes="framed")
            with Vertical(id="dash-side"):
                yield Gauges(id="gauges", classes="panel")
                yield Static(id="events", classes="panel")
        with Horizontal(id="dash-charts"):
            yield Chart("objective by trial (line: best so far)", id="history", classes="framed")
            yield Chart("learning curves: running and best", id="curves", classes="framed")
            yield Static(id="dash-output", classes="framed")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#events", Static).border_title = "events"
        self.query_one("#gauges", Gauges).border_title = "system"

    # ------------------------------------------------------------ polling

    def read(self) -> Snapshot:
        study_name, applied, output_for = self.app.study_name, self.applied, self.output_for
        started = time.perf_counter()
        reader: Reader = self.app.reader
        studies = reader.studies()
        study = next((s for s in studies if s.name == study_name), None) if study_name else \
            (studies[-1] if studies else None)
        if study is None:
            return Snapshot(None, [], reader.latest_samples(), {}, [], 0)
        if self.feed is None or self.feed.study_id != study.study_id:
            self.feed = TrialFeed(reader, study.study_id)
            self.last_event = 0
        self.feed.poll()
        applied_study, applied_version = applied
        changed = self.feed.since(applied_version if applied_study == study.study_id else 0)
        rows = self.feed.rows
        running = [r.trial_id for r in rows.values() if r.state == "RUNNING"]
        best = _best_row(rows, study)
        curve_ids = running[:8] + ([best.trial_id] if best else [])
        config = reader.sweep_config(study.study_id) if self.study is None or self.study.study_id != study.study_id \
            else None
        total_epochs = _total_epochs(config) if config is not None else self._total_epochs
        program = bool((config.get("objective") or {}).get("command")) if config is not None else None
        events = reader.events(study.study_id, self.last_event, limit=50)
        recent = [asdict(x) for x in reader.samples_between(clock.now() - GPU_WINDOW_S, clock.now())]
        usage = gpu_usage(recent)
        known = self.split
        split = known[1] if known and known[0] == study.study_id else reader.split(study.study_id)
        output = self._output(reader, study, rows.get(output_for)) if output_for is not None else None
        return Snapshot(
            study=study, changed=changed, samples=reader.latest_samples(), curves=reader.intermediate(curve_ids),
            events=events, total_epochs=total_epochs, took_ms=(time.perf_counter() - started) * 1000, rows=rows,
            version=self.feed.version, gpu_busy=usage["busy_percent"] if usage else None, split=split,
            program=program, output=output)

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
        study, rows = snap.study, snap.rows
        self.study = study
        self._total_epochs = snap.total_epochs
        if snap.program is not None and snap.program != self.program:  # another study
            self.program = snap.program
            if not self.program and self.output_for is not None:
                self.action_output()
            self.refresh_bindings()
        table = self.query_one(TrialTable)
        if self.applied[0] != study.study_id:
            table.reset()
            self.events = []
        table.setup(study.metrics if study.directions else ("value",), snap.total_epochs)
        best = _best_row(rows, study)
        running = [r for r in rows.values() if r.state == "RUNNING"]
        with self.app.batch_update():
            table.apply(snap.changed, best.number if best else None, running)
        self.applied = (study.study_id, snap.version)
        if snap.split is not None:
            self.split = (study.study_id, snap.split)
        header.update(_header(study, best, rows, snap.gpu_busy, snap.split))
        if snap.events:
            self.last_event = snap.events[-1].id
            # Trial starts are in the table already; the panel keeps outcomes and commands.
            merged = {e.id: e for e in self.events + [e for e in snap.events if e.kind != "trial"]}
            self.events = sorted(merged.values(), key=lambda e: e.id)[-50:]
            self.query_one("#events", Static).update(_events_text(self.events))
        self._charts(study, rows, best, snap.curves)
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

    def _charts(self, study: StudyRow, rows: dict[int, TrialRow], best: TrialRow | None,
                curves: dict[int, list[tuple[int, float]]]) -> None:
        complete = sorted((r for r in rows.values() if r.state == "COMPLETE" and r.values), key=lambda r: r.number)
        history = self.query_one("#history", Chart)
        if complete:
            maximize = not study.directions or study.directions[0] == "maximize"
            xs = [r.number for r in complete]
            ys = [r.values[0] for r in complete]
            best_line, current = [], None
            for y in ys:
                current = y if current is None else (max(current, y) if maximize else min(current, y))
                best_line.append(current)
            step = max(1, len(xs) // MAX_POINTS)

            def draw_history(plt: Any) -> None:
                plt.scatter(xs[::step], ys[::step], marker="dot", color="cyan")
                plt.plot(xs, best_line, color="green", marker="braille")
                plt.xlabel("trial")

            history.plot(draw_history, (len(xs), xs[-1], best_line[-1]))
        else:
            history.plot(None, None)
        curve_chart = self.query_one("#curves", Chart)
        by_id = {r.trial_id: r for r in rows.values()}
        series = [(by_id[tid], pts) for tid, pts in curves.items() if tid in by_id and pts]
        first, xlabel = (0, "step") if self.program else (1, "epoch")  # a program's steps as it numbers them
        if series:
            def draw_curves(plt: Any) -> None:
                for row, pts in series:
                    label = f"#{row.number}" + (" best" if best and row.number == best.number else "")
                    plt.plot([p[0] + first for p in pts], [p[1] for p in pts], label=label, marker="braille")
                plt.xlabel(xlabel)

            curve_chart.plot(draw_curves, tuple((r.number, len(p), p[-1][1]) for r, p in series))
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

    def action_sort(self) -> None:
        self.notify(f"sorted by {self.query_one(TrialTable).cycle_sort()}")

    def action_filter(self) -> None:
        self.notify(f"showing {self.query_one(TrialTable).cycle_filter()} trials")

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

    @on(TrialTable.RowHighlighted)
    def _selected(self, event: TrialTable.RowHighlighted) -> None:
        """The panel follows the cursor: the newly selected trial's output is read at once."""
        if self.output_for is not None and event.row_key.value is not None:
            number_ = int(event.row_key.value)
            if number_ != self.output_for:
                self._follow(number_)

    def _follow(self, number_: int) -> None:
        self.output_for = number_
        box = self.query_one("#dash-output", Static)
        box.border_title = Text(f"output of trial {number_}")
        box.update(Text("reading ...", style="dim"))
        self.poll()

    @on(TrialTable.RowSelected)
    def open_trial(self, event: TrialTable.RowSelected) -> None:
        if self.study is not None and event.row_key.value is not None:
            from tui_hpo.screens.trial import TrialScreen

            self.app.push_screen(TrialScreen(self.study, int(event.row_key.value)))


def _best_row(rows: dict[int, TrialRow], study: StudyRow) -> TrialRow | None:
    complete = [r for r in rows.values() if r.state == "COMPLETE" and r.values]
    if not complete or len(study.directions) != 1:
        return None
    pick = max if study.directions[0] == "maximize" else min
    return pick(complete, key=lambda r: r.values[0])


def _total_epochs(config: dict[str, Any]) -> int:
    train = config.get("train") or {}
    folds = (config.get("data") or {}).get("folds", 1)
    return int(train.get("epochs", 0)) * int(folds or 1)


STATE_STYLE = {SweepState.RUNNING: "bold green", SweepState.PAUSED: "bold yellow", SweepState.STOPPING: "bold red",
               SweepState.STOPPED: "red", SweepState.FINISHED: "bold cyan", SweepState.EXTERNAL: "dim"}


def _header(study: StudyRow, best: TrialRow | None, rows: dict[int, TrialRow], gpu_busy: float | None = None,
            split: dict[str, Any] | None = None) -> Text:
    c = study.counts
    text = Text()
    text.append(f" {study.name} ", style="bold reverse")
    text.append(f" {study.state} ", style=STATE_STYLE.get(study.state, ""))
    total = f"/{study.n_trials}" if study.n_trials else ""
    text.append(f" {study.done}{total} done  ")
    text.append(f"{c.get('RUNNING', 0)} running  ", style="yellow")
    text.append(f"{c.get('PRUNED', 0)} pruned  ", style="cyan")
    text.append(f"{c.get('FAIL', 0)} failed  ", style="red")
    now = clock.now()
    if study.created:
        end = now if study.state in (*ACTIVE, SweepState.STOPPING) else (study.updated or now)
        text.append(f"elapsed {duration(end - study.created)}")
    eta = _eta(study, rows)
    if eta is not None:
        text.append(f"  ETA {duration(eta)}")
    if split:  # last on the first line: where it wraps at 80 columns there is room
        text.append("  ")
        text.append_text(_split_text(split))
    text.append("\n")
    if gpu_busy is not None:  # first on its line: the figure a GPU sweep is judged by, never wrapped away
        text.append(f" GPU busy {gpu_busy:.0f}% ", style="bold" if gpu_busy >= 60 else "bold yellow")
    if best is not None:
        text.append(f" best {study.metrics[0] if study.metrics else 'value'} ", style="bold")
        text.append(f"{number(best.values[0])} ", style="bold green")
        text.append(f"(trial {best.number})  ", style="bold")
        text.append(params(best.params), style="dim")
    elif len(study.directions) > 1:
        text.append(" several objectives: see the Pareto front in the analysis", style="dim")
    else:
        text.append(" no completed trial yet", style="dim")
    return text


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


def _eta(study: StudyRow, rows: dict[int, TrialRow]) -> float | None:
    if not study.n_trials or study.state not in ACTIVE:
        return None
    durations = [r.duration() for r in rows.values() if r.state in FINISHED_TRIALS]
    recent = [d for d in durations if d][-RECENT_DURATIONS:]
    return eta_seconds(recent, study.n_trials, study.done, study.counts.get("RUNNING", 0))


def _events_text(events: list[Event]) -> Text:
    """Newest first, so a short panel still shows what just happened."""
    text = Text()
    for event in reversed(events[-20:]):
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        style = {"warning": "yellow", "error": "bold red"}.get(event.level, "")
        text.append(f"{stamp} ", style="dim")
        text.append(event.message + "\n", style=style)
    return text
