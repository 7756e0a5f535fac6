"""The trial table: rows keyed by trial number, updated in place cell by cell."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui_hpo import clock
from tui_hpo.db import TrialRow
from tui_hpo.format import duration, number, params

STATE_STYLE = {"RUNNING": "bold yellow", "COMPLETE": "green", "PRUNED": "cyan", "FAIL": "red", "WAITING": "dim"}
FILTERS = (None, "RUNNING", "COMPLETE", "PRUNED", "FAIL")
SORTS = ("number", "value", "time")


class TrialTable(DataTable):
    """Trials of one study. Only changed cells are touched on a poll; sorting and filtering are
    applied by the table, not by re-reading the database."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.metrics: tuple[str, ...] = ()
        self.total_epochs = 0
        self.best: int | None = None
        self.state_filter: str | None = None
        self.sort_by = "number"
        self.sort_reverse = False
        self._rows: dict[int, TrialRow] = {}
        self._cells: dict[int, tuple] = {}

    def reset(self) -> None:
        """Another study: forget every row and column."""
        self._rows.clear()
        self._cells.clear()
        self.best = None
        self.metrics = ()
        self.clear(columns=True)

    def setup(self, metrics: tuple[str, ...], total_epochs: int) -> None:
        if metrics == self.metrics and total_epochs == self.total_epochs and self.columns:
            return
        self.metrics, self.total_epochs = metrics, total_epochs
        self.clear(columns=True)
        self._cells.clear()
        self.add_column("", key="best", width=1)
        self.add_column("#", key="number")
        self.add_column("state", key="state")
        for metric in metrics:
            self.add_column(metric, key=f"value{metrics.index(metric)}")
        self.add_column("epoch", key="epoch")
        self.add_column("time", key="time")
        self.add_column("worker", key="worker")
        self.add_column("params", key="params")
        for row in self._rows.values():
            self._place(row)

    @property
    def column_keys(self) -> list[str]:
        return ["best", "number", "state", *(f"value{i}" for i in range(len(self.metrics))), "epoch", "time",
                "worker", "params"]

    def _cells_of(self, row: TrialRow, now: float) -> tuple:
        state = Text(row.state.lower(), style=STATE_STYLE.get(row.state, ""))
        if row.retry_of is not None:
            state.append(f" ↻{row.retry_of}", style="cyan")  # a rerun of that trial: its worker died
        values = [Text(number(v), justify="right") for v in (row.values or ())]
        values += [Text("-", style="dim", justify="right")] * (len(self.metrics) - len(values))
        epoch = f"{row.epoch}/{self.total_epochs}" if self.total_epochs else str(row.epoch)
        elapsed = row.duration(now)
        return (Text("★", style="bold yellow") if row.number == self.best else "",
                Text(str(row.number), justify="right"), state, *values[: len(self.metrics)],
                Text(epoch, justify="right"), Text(duration(elapsed), justify="right"),
                row.worker or "-", params(row.params))

    def _visible(self, row: TrialRow) -> bool:
        return self.state_filter is None or row.state == self.state_filter

    def _place(self, row: TrialRow, now: float | None = None) -> None:
        cells = self._cells_of(row, now or clock.now())
        key = str(row.number)
        if not self._visible(row):
            if row.number in self._cells:
                self.remove_row(key)
                del self._cells[row.number]
            return
        old = self._cells.get(row.number)
        if old is None:
            self.add_row(*cells, key=key)
        else:
            for column, before, after in zip(self.column_keys, old, cells, strict=True):
                if str(before) != str(after):
                    self.update_cell(key, column, after, update_width=column != "params")
        self._cells[row.number] = cells

    def apply(self, changed: list[TrialRow], best: int | None, running: list[TrialRow]) -> None:
        """New and changed trials, the best trial's number, and running trials (their clocks tick)."""
        now = clock.now()
        old_best, self.best = self.best, best
        for row in changed:
            self._rows[row.number] = row
        touched = {r.number for r in changed} | {r.number for r in running}
        for extra in (old_best, best):
            if extra is not None and extra in self._rows:
                touched.add(extra)
        for num in sorted(touched):
            if num in self._rows:
                self._place(self._rows[num], now)
        if changed and self.sort_by != "number":
            self._sort()

    def cycle_filter(self) -> str:
        self.state_filter = FILTERS[(FILTERS.index(self.state_filter) + 1) % len(FILTERS)]
        self._rebuild()
        return self.state_filter or "all"

    def cycle_sort(self) -> str:
        order = [(s, r) for s in SORTS for r in (False, True)]
        self.sort_by, self.sort_reverse = order[(order.index((self.sort_by, self.sort_reverse)) + 1) % len(order)]
        self._sort()
        return f"{self.sort_by} {'descending' if self.sort_reverse else 'ascending'}"

    def _rebuild(self) -> None:
        self.clear()
        self._cells.clear()
        now = clock.now()
        for row in sorted(self._rows.values(), key=lambda r: r.number):
            self._place(row, now)
        self._sort()

    def _sort(self) -> None:
        rows = self._rows

        def key(number_text: Any) -> Any:
            row = rows[int(str(number_text))]
            if self.sort_by == "value":
                return row.values[0] if row.values else float("-inf")
            if self.sort_by == "time":
                return row.duration() or 0.0
            return row.number

        self.sort("number", key=key, reverse=self.sort_reverse)

    def selected_number(self) -> int | None:
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return int(row_key.value) if row_key.value is not None else None
