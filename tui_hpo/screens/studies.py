"""Every study in the workspace database (or the --storage URL): state, trials, best value."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from engine.storage.states import ACTIVE, SweepState
from tui_hpo import clock
from tui_hpo.db import StudyRow
from tui_hpo.format import duration, number
from tui_hpo.screens.base import LiveScreen
from tui_hpo.screens.dashboard import STATE_STYLE


class StudiesScreen(LiveScreen):
    CSS_PATH = "studies.tcss"
    POLL_S = 2.0

    BINDINGS = [Binding("r", "resume", "resume sweep")]

    def compose(self) -> ComposeResult:
        yield Static(id="studies-header", classes="bar")
        yield DataTable(id="studies", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in (("name", "study"), ("state", "state"), ("done", "done"), ("running", "running"),
                           ("pruned", "pruned"), ("failed", "failed"), ("best", "best"), ("age", "started")):
            table.add_column(label, key=key)
        self.studies: dict[str, StudyRow] = {}

    def read(self) -> list[StudyRow]:
        return self.app.reader.studies()

    def show(self, studies: list[StudyRow]) -> None:
        table = self.query_one(DataTable)
        now = clock.now()
        with self.app.batch_update():
            for study in studies:
                total = f"/{study.n_trials}" if study.n_trials else ""
                best = "pareto" if len(study.directions) > 1 else (number(study.best) if study.best is not None
                                                                    else "-")
                cells = (Text(study.name, style="bold"), Text(study.state, style=STATE_STYLE.get(study.state, "")),
                         f"{study.done}{total}", str(study.counts.get("RUNNING", 0)),
                         str(study.counts.get("PRUNED", 0)), str(study.counts.get("FAIL", 0)), best,
                         f"{duration(now - study.created)} ago" if study.created else "-")
                if study.name in self.studies:
                    for key, cell in zip(("name", "state", "done", "running", "pruned", "failed", "best", "age"),
                                         cells, strict=True):
                        table.update_cell(study.name, key, cell)
                else:
                    table.add_row(*cells, key=study.name)
                self.studies[study.name] = study
        current = self.app.study_name or (studies[-1].name if studies else None)
        plural = "study" if len(studies) == 1 else "studies"
        header = Text(f" {len(studies)} {plural} in {self.app.storage_label}", style="bold")
        header.append(f"   watching: {current}" if current else "   no study yet", style="dim")
        header.append("\n enter: watch on the dashboard   r: resume a stopped sweep", style="dim")
        self.query_one("#studies-header", Static).update(header)

    def _selected(self) -> StudyRow | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return self.studies.get(str(key.value))

    @dataclass
    class Show(Message):
        """Show this study on the dashboard."""

        name: str

    @dataclass
    class Resume(Message):
        """Start the engine again on this stopped study, with the config saved in the storage."""

        name: str

    @on(DataTable.RowSelected)
    def open_study(self, event: DataTable.RowSelected) -> None:
        study = self.studies.get(str(event.row_key.value))
        if study is not None:
            self.post_message(self.Show(study.name))

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
