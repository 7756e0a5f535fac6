"""Every study in the workspace database (or the --storage URL), live: state, trial counts, best
value, ETA and a sparkline of trials finished over time; and a chart that overlays the histories
(each trial's value, the best so far) of the studies marked with space, or of the highlighted one.

What a poll costs does not grow with the studies' length once they are loaded: a study's
sparkline and ETA are read again only when its trial counts change, its chart points only when
its completed trials do (finished trials never change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from engine.storage.states import ACTIVE, SweepState, eta_seconds
from tui_hpo import clock
from tui_hpo.db import Reader, StudyRow
from tui_hpo.format import duration, number, spark
from tui_hpo.screens.base import LiveScreen
from tui_hpo.screens.dashboard import STATE_STYLE
from tui_hpo.widgets.chart import Chart

SPARK_BUCKETS = 12
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")  # names plotext and rich both know
# Under NO_COLOR (Textual then greys everything) studies differ by marker: (plotext's, the list's)
MARKERS = (("braille", "⣿"), ("+", "+"), ("x", "x"), ("o", "o"), ("*", "*"), ("dot", "•"))
MAX_POINTS = 2000  # dots per study in the chart: plotext's cost grows with points, the cells do not
COLUMNS = (("name", "study"), ("state", "state"), ("done", "done"), ("running", "run"), ("pruned", "pruned"),
           ("failed", "failed"), ("best", "best"), ("eta", "ETA"), ("progress", "finished/time"), ("age", "started"))
# Below NARROW columns: the state as a coloured symbol, the three counts in one column, no start time.
NARROW = 100
NARROW_COLUMNS = (("name", "study"), ("state", ""), ("done", "done"), ("counts", "run/pr/fail"), ("best", "best"),
                  ("eta", "ETA"), ("progress", "finished/time"))
STATE_SYMBOL = {SweepState.RUNNING: "▶", SweepState.PAUSED: "‖", SweepState.STOPPING: "■", SweepState.STOPPED: "■",
                SweepState.FINISHED: "✓", SweepState.EXTERNAL: "·"}


@dataclass(frozen=True)
class Live:
    """A study's columns that need more than its row: trials finished per stretch of time
    (oldest first), and the time left."""

    finished: list[int]
    eta: float | None


@dataclass(frozen=True)
class Series:
    study: StudyRow
    points: list[tuple[int, float]]  # (trial number, first objective) of its completed trials


@dataclass(frozen=True)
class Listing:
    studies: list[StudyRow]
    live: dict[int, Live]
    series: list[Series]  # the chart's studies, in colour order


class StudiesScreen(LiveScreen):
    CSS_PATH = "studies.tcss"
    POLL_S = 2.0

    BINDINGS = [Binding("space", "mark", "mark", tooltip="mark or unmark the study: marked ones are overlaid"),
                Binding("v", "values", "dots", tooltip="each trial's value in the chart, or the best so far only"),
                Binding("r", "resume", "resume", tooltip="resume the stopped sweep under the cursor")]

    def compose(self) -> ComposeResult:
        yield Static(id="studies-header", classes="bar")
        yield DataTable(id="studies", cursor_type="row", zebra_stripes=True)
        yield Chart("history", id="studies-chart", classes="framed")
        yield Static(id="studies-empty", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.columns: tuple[tuple[str, str], ...] = ()  # set by the first draw, for the width
        self.studies: dict[str, StudyRow] = {}
        self.live: dict[int, Live] = {}
        self.marked: tuple[str, ...] = ()  # in the order marked: each keeps its colour
        self.cursor: str | None = None
        self.dots = True
        # Read in the poll worker only (one at a time): key -> what was read for it
        self._live_cache: dict[int, tuple[Any, Live]] = {}
        self._points_cache: dict[int, tuple[int, list[tuple[int, float]]]] = {}

    # ------------------------------------------------------------ reading (worker thread)

    def read(self) -> Listing:
        reader: Reader = self.app.reader
        studies = reader.studies()
        by_name = {s.name: s for s in studies}
        shown = self.marked or (self.cursor or self._watched(studies),)
        series = [Series(by_name[name], self._points(reader, by_name[name])) for name in shown if name in by_name]
        return Listing(studies, {s.study_id: self._live(reader, s) for s in studies}, series)

    def _live(self, reader: Reader, study: StudyRow) -> Live:
        key = (tuple(sorted(study.counts.items())), study.state, study.n_trials)
        cached = self._live_cache.get(study.study_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        finished, durations = reader.progress(study.study_id, SPARK_BUCKETS)
        eta = eta_seconds(durations, study.n_trials, study.done, study.counts.get("RUNNING", 0)) \
            if study.n_trials and study.state in ACTIVE else None
        live = Live(finished, eta)
        self._live_cache[study.study_id] = (key, live)
        return live

    def _points(self, reader: Reader, study: StudyRow) -> list[tuple[int, float]]:
        complete = study.counts.get("COMPLETE", 0)
        cached = self._points_cache.get(study.study_id)
        if cached is None or cached[0] != complete:
            cached = (complete, reader.completed_values(study.study_id))
            self._points_cache[study.study_id] = cached
        return cached[1]

    def _watched(self, studies: list[StudyRow]) -> str | None:
        return self.app.study_name or (studies[-1].name if studies else None)

    # ------------------------------------------------------------ drawing

    def show(self, listing: Listing) -> None:
        self.live = listing.live
        self._fill(listing.studies)
        self._header(listing.studies)
        self._chart(listing)

    def on_resize(self) -> None:
        if self.studies and (NARROW_COLUMNS if self.size.width < NARROW else COLUMNS) != self.columns:
            self._fill(list(self.studies.values()))

    def _fill(self, studies: list[StudyRow]) -> None:
        """The list, updated in place by key; rebuilt only when the width changes its columns."""
        table = self.query_one(DataTable)
        columns = NARROW_COLUMNS if self.size.width < NARROW else COLUMNS
        names = {s.name for s in studies}
        with self.app.batch_update():
            if columns != self.columns:
                table.clear(columns=True)
                for key, label in columns:
                    table.add_column(label, key=key)
                self.columns, self.studies = columns, {}
            for gone in [name for name in self.studies if name not in names]:  # a study deleted meanwhile
                table.remove_row(gone)
                del self.studies[gone]
            for study in studies:
                cells = self._cells(study)
                if study.name in self.studies:
                    for (key, _label), cell in zip(columns, cells, strict=True):
                        table.update_cell(study.name, key, cell)
                else:
                    table.add_row(*cells, key=study.name)
                self.studies[study.name] = study

    def _cells(self, study: StudyRow) -> tuple[Any, ...]:
        """The row's cells, in the order of the columns shown."""
        mark = self._colour(study.name)
        bullet = "  " if mark is None else (MARKERS[self.marked.index(study.name) % len(MARKERS)][1]
                                            if self.app.no_color else "●") + " "
        style = STATE_STYLE.get(study.state, "")
        c = study.counts
        live = self.live.get(study.study_id)
        finished = live.finished if live is not None else []
        total = f"/{study.n_trials}" if study.n_trials else ""
        cells = {
            "name": Text.assemble((bullet, f"bold {mark}" if mark else ""), (study.name, "bold")),
            "state": Text(STATE_SYMBOL.get(study.state, "?"), style=style) if self.columns == NARROW_COLUMNS
            else Text(study.state, style=style),
            "done": f"{study.done}{total}", "running": str(c.get("RUNNING", 0)), "pruned": str(c.get("PRUNED", 0)),
            "failed": str(c.get("FAIL", 0)), "counts": f"{c.get('RUNNING', 0)}/{c.get('PRUNED', 0)}/{c.get('FAIL', 0)}",
            "best": "pareto" if len(study.directions) > 1 else number(study.best) if study.best is not None else "-",
            "eta": duration(live.eta) if live is not None and live.eta is not None else "-",
            "progress": Text(spark(finished, high=max(finished)), style="green") if finished and max(finished)
            else Text("-"),
            "age": f"{duration(clock.now() - study.created)} ago" if study.created else "-",
        }
        return tuple(cells[key] for key, _label in self.columns)

    def _colour(self, name: str) -> str | None:
        """A marked study's colour: its bullet in the list is its legend in the chart."""
        return COLORS[self.marked.index(name) % len(COLORS)] if name in self.marked else None

    def _header(self, studies: list[StudyRow]) -> None:
        header = self.query_one("#studies-header", Static)
        if not studies:
            header.update(Text.assemble((f" No study in {self.app.storage_label} yet", "bold"),
                                        ("\n each sweep started here (2: wizard) or with `tui-hpo run` is one study",
                                         "dim")))
            return
        current = self._watched(studies)
        plural = "study" if len(studies) == 1 else "studies"
        text = Text(f" {len(studies)} {plural} in {self.app.storage_label}", style="bold")
        text.append(f"   watching: {current}", style="dim")
        text.append("\n space: mark studies to overlay   enter: watch on the dashboard", style="dim")
        header.update(text)

    def _chart(self, listing: Listing) -> None:
        chart = self.query_one("#studies-chart", Chart)
        empty = self.query_one("#studies-empty", Static)
        series = [s for s in listing.series if s.points]
        names = ", ".join(s.study.name for s in listing.series)
        chart.border_title = f"histories: {names}" if len(listing.series) > 1 else f"history of {names}"
        chart.display, empty.display = bool(series), not series
        if not series:
            empty.update(self._empty_text(listing))
            return
        order = [self.marked.index(s.study.name) if s.study.name in self.marked else 0 for s in series]
        colours = [COLORS[i % len(COLORS)] for i in order]
        markers = [MARKERS[i % len(MARKERS)][0] if self.app.no_color else "braille" for i in order]
        metrics = {s.study.metrics[0] if s.study.metrics else "value" for s in series}
        ylabel = metrics.pop() if len(metrics) == 1 else "first objective"
        dots = self.dots

        def draw(plt: Any) -> None:
            for one, colour, marker in zip(series, colours, markers, strict=True):
                xs, ys = [p[0] for p in one.points], [p[1] for p in one.points]
                if dots:
                    step = max(1, len(xs) // MAX_POINTS)
                    plt.scatter(xs[::step], ys[::step], marker="dot", color=colour)
                bx, by = best_so_far(one.points, not one.study.directions or one.study.directions[0] == "maximize")
                label = one.study.name + (" (objective 1)" if len(one.study.directions) > 1 else "")
                plt.plot(bx, by, marker=marker, color=colour, label=label)
            last = max(p[0] for one in series for p in one.points)
            plt.xticks(sorted({round(last * i / 4) for i in range(5)}))  # trial numbers are whole
            plt.xlabel("trial")
            plt.ylabel(ylabel)

        chart.plot(draw, (tuple((s.study.name, len(s.points)) for s in series), tuple(order), dots))

    def _empty_text(self, listing: Listing) -> Text:
        """Why the chart is empty, and what will appear there."""
        if not listing.studies:
            return Text.assemble(("Nothing to chart yet. ", "bold"),
                                 "Studies appear in the list above as sweeps start: press 2 for the wizard, or run "
                                 "`tui-hpo run --config FILE`. Each trial's value and the best so far are then "
                                 "charted here, and studies marked with space are overlaid to compare them.")
        names = " and ".join(f"'{s.study.name}'" for s in listing.series) or "this study"
        return Text.assemble((f"No completed trial in {names} yet. ", "bold"),
                             "Each trial's value (dots) and the best so far (a line) appear here as trials "
                             "complete; mark studies with space to overlay theirs.")

    # ------------------------------------------------------------ keys

    @dataclass
    class Show(Message):
        """Show this study on the dashboard."""

        name: str

    @dataclass
    class Resume(Message):
        """Start the engine again on this stopped study, with the config saved in the storage."""

        name: str

    def _selected(self) -> StudyRow | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return self.studies.get(str(key.value))

    @on(DataTable.RowSelected)
    def open_study(self, event: DataTable.RowSelected) -> None:
        study = self.studies.get(str(event.row_key.value))
        if study is not None:
            self.post_message(self.Show(study.name))

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        """With nothing marked, the chart follows the cursor."""
        self.cursor = str(event.row_key.value)
        if not self.marked:
            self.poll()

    def action_mark(self) -> None:
        study = self._selected()
        if study is None:
            return
        self.marked = tuple(n for n in self.marked if n != study.name) if study.name in self.marked \
            else (*self.marked, study.name)
        table = self.query_one(DataTable)
        for name, row in self.studies.items():  # colours follow the order of marking
            table.update_cell(name, "name", self._cells(row)[0])
        self.poll()

    def action_values(self) -> None:
        self.dots = not self.dots
        self.poll()

    def action_resume(self) -> None:
        study = self._selected()
        if study is None:
            return
        if study.state == SweepState.EXTERNAL:
            self.notify("this study was not created by tui-hpo", severity="warning")
            return
        if study.state in ACTIVE and self.app.reader.live_workers(study.study_id):
            self.notify(f"'{study.name}' is already running", severity="warning")
            return
        self.post_message(self.Resume(study.name))


def best_so_far(points: list[tuple[int, float]], maximize: bool) -> tuple[list[int], list[float]]:
    """The best-so-far line as steps: a point where it improves (and just before, so the line stays
    flat until then) and at the last trial; a few points however long the study."""
    xs: list[int] = []
    ys: list[float] = []
    best: float | None = None
    for x, y in points:
        if best is None or (y > best if maximize else y < best):
            if best is not None and xs[-1] != x - 1:
                xs.append(x - 1)
                ys.append(best)
            best = y
            xs.append(x)
            ys.append(y)
    if points and xs[-1] != points[-1][0]:
        xs.append(points[-1][0])
        ys.append(ys[-1])
    return xs, ys
