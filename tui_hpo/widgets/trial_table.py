"""The trial table: one column per parameter and per metric, sorted and filtered on whole columns,
drawn a visible line at a time.

It draws from a `Trials` snapshot (columns of numpy arrays, `tui_hpo.db`): sorting is an argsort,
a filter (`tui_hpo.query`) a boolean mask, and the result one array of positions, `order`. Only the
lines in view are rendered (Textual's Line API), so 100,000 trials cost what 30 do on a redraw.
textual-fastdatatable (Arrow-backed) was measured first on 100,000 rows: 0.4 s to import pyarrow,
0.6 s to the first paint, 0.1-0.2 s for each `update_cell` or `add_row` (an Arrow table is
rebuilt), which a tick that updates two running trials cannot afford.

Which columns show, the sort and the filter are the user's `View`, kept per study in
`<workdir>/<study>/tui.json`. Narrow tables (below COMPACT columns) put the params first, draw
the state as one coloured symbol and hide the worker unless the user chose to show it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui_hpo import clock
from tui_hpo.db import STATES, Trials
from tui_hpo.format import duration
from tui_hpo.query import Codes, Column, Node, Numbers, QueryError, compile_query, evaluate

COMPACT = 100  # below this many columns: params first, state as a symbol, worker hidden
PINNED = ("#", "state")  # stay at the left while the other columns scroll sideways
STATE_STYLE = {"RUNNING": "bold yellow", "COMPLETE": "green", "PRUNED": "cyan", "FAIL": "red", "WAITING": "dim"}
STATE_SYMBOL = {"RUNNING": "▶", "COMPLETE": "✓", "PRUNED": "✂", "FAIL": "✗", "WAITING": "…"}
STATE_FILTERS = ("", "state == running", "state == complete", "state == pruned", "state == fail")
ALIASES = {"number": "#", "duration": "time"}  # other names a query may use for a column
MAX_TEXT = 24  # the widest a text column grows


@dataclass
class View:
    """What the user chose for a study's table: kept in its tui.json."""

    shown: dict[str, bool] = field(default_factory=dict)  # column -> shown, only where the user chose
    sort: str = "#"
    reverse: bool = False
    query: str = ""


def load_view(path: Path) -> View:
    """The view saved at `path`; the default one if there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text())
        return View(shown={str(k): bool(v) for k, v in data.get("shown", {}).items()}, sort=str(data.get("sort", "#")),
                    reverse=bool(data.get("reverse", False)), query=str(data.get("query", "")))
    except (OSError, ValueError, AttributeError):
        return View()


def save_view(path: Path, view: View) -> None:
    """Written to a temporary file and renamed, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tui-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(view), fh, indent=1)
    os.replace(tmp, path)


def number_format(values: np.ndarray, integer: bool = False) -> Callable[[float], str]:
    """One format for a whole column, so its numbers line up: whole numbers as integers, a column
    spanning tiny or huge magnitudes in scientific notation, others with four significant digits
    of the largest value."""
    finite = values[np.isfinite(values)]
    if integer or (finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() < 1e15):
        return lambda v: f"{v:.0f}"
    if not finite.size:
        return lambda v: f"{v:.4g}"
    magnitude = float(np.abs(finite).max())
    smallest = float(np.abs(finite[finite != 0]).min()) if np.any(finite != 0) else magnitude
    if magnitude >= 1e5 or smallest < 1e-3:
        return lambda v: f"{v:.2e}"
    decimals = max(0, 3 - math.floor(math.log10(magnitude))) if magnitude > 0 else 4
    return lambda v: f"{v:.{decimals}f}"


@dataclass
class Spec:
    """How one column is drawn: its cells as text and style, its width, its alignment."""

    key: str
    label: str
    cell: Callable[[int], tuple[str, str]]  # position -> (text, style)
    width: int
    right: bool


class TrialTable(ScrollView, can_focus=True):
    """Trials of one study: up/down move, left/right pick a column, `s` sorts by it (again:
    reversed), a click on a header sorts by that column, `/` filters, `c` chooses columns, `f`
    cycles the state filter, enter opens the trial."""

    BINDINGS = [
        Binding("up", "move(-1)", "move", show=False), Binding("down", "move(1)", "move", show=False),
        Binding("pageup", "page(-1)", "page", show=False), Binding("pagedown", "page(1)", "page", show=False),
        Binding("home", "edge(0)", "first / last", show=False), Binding("end", "edge(1)", "first / last", show=False),
        Binding("left", "column(-1)", "column", show=False), Binding("right", "column(1)", "column", show=False),
        Binding("enter", "select", "open", show=False, tooltip="open the trial"),
        Binding("s", "sort", "sort", tooltip="sort by the column under the cursor (again: reversed)"),
        Binding("slash", "filter", "filter", key_display="/",
                tooltip="filter: lr < 1e-3 and state == complete, model in (a, b), not, or"),
        Binding("c", "columns", "columns", tooltip="choose the columns shown"),
        Binding("f", "state_filter", "state", show=False, tooltip="show one state, then the next"),
    ]
    COMPONENT_CLASSES = {"trial-table--header", "trial-table--cursor", "trial-table--column", "trial-table--even"}
    DEFAULT_CSS = """
    TrialTable { background: $surface; overflow-x: hidden; }
    TrialTable > .trial-table--header { text-style: bold; background: $panel; }
    TrialTable > .trial-table--column { text-style: bold underline; }
    TrialTable > .trial-table--even { background: $surface-lighten-1 50%; }
    TrialTable > .trial-table--cursor {
        background: $block-cursor-blurred-background; color: $block-cursor-blurred-foreground;
    }
    TrialTable:focus > .trial-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: $block-cursor-text-style;
    }
    """

    class Highlighted(Message):
        """The cursor moved onto another trial."""

        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    class Selected(Message):
        """Enter (or a click on the highlighted row): open this trial."""

        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trials = Trials()
        self.version = -1  # the feed version drawn
        self.metrics: tuple[str, ...] = ("value",)
        self.total_epochs = 0
        self.best: int | None = None  # the best trial's number
        self.view = View()
        self.path: Path | None = None  # where the view is kept
        self.order = np.zeros(0, dtype=np.int64)  # positions shown, top to bottom
        self.cursor_row = 0
        self.cursor_col = 0  # index into the visible columns
        self._specs: list[Spec] = []
        self._node: Node | None = None
        self._first = 0  # the first unpinned column in view (sideways scrolling is by column)
        self._highlighted: int | None = None

    # ------------------------------------------------------------ data

    @property
    def row_count(self) -> int:
        """Trials shown (after the filter)."""
        return len(self.order)

    def reset(self, path: Path | None = None) -> None:
        """Another study: its trials come with the next `show`; its view is read from `path`."""
        self.trials, self.version, self.best = Trials(), -1, None
        self.path = path
        self.view = load_view(path) if path else View()
        self._node = None
        self.cursor_row = self.cursor_col = self._first = 0
        self._highlighted = None
        self.order = np.zeros(0, dtype=np.int64)
        self._restore_query()
        self.refresh()

    def show(self, trials: Trials, version: int, metrics: tuple[str, ...], total_epochs: int,
             best: int | None) -> None:
        """A new snapshot (or the same one, whose running trials' clocks tick on)."""
        changed = version != self.version or metrics != self.metrics or total_epochs != self.total_epochs \
            or best != self.best
        self.trials, self.metrics, self.total_epochs, self.best = trials, metrics, total_epochs, best
        if changed:
            self.version = version
            if self._node is None and self.view.query:
                self._restore_query()
            self._reorder()
        else:
            self.refresh()

    def columns(self) -> dict[str, Column]:
        """Every column by name, as the filter and the sort see them (aliases included)."""
        t = self.trials
        cols: dict[str, Column] = {"#": Numbers(t.number.astype(float)),
                                   "state": Codes(t.state.astype(np.int32), [s.lower() for s in STATES])}
        for i, metric in enumerate(self.metrics):
            cols[metric] = Numbers(t.values[:, i] if i < t.values.shape[1] else np.full(t.n, np.nan))
        if self.metrics and "value" not in cols:
            cols["value"] = cols[self.metrics[0]]
        for key, column in t.params.items():
            cols.setdefault(key, column)
        cols["epoch"] = Numbers(t.epoch.astype(float))
        cols["time"] = Numbers(t.durations(clock.now()))
        cols["worker"] = t.worker
        for alias, name in ALIASES.items():
            cols.setdefault(alias, cols[name])
        return cols

    def all_columns(self) -> list[str]:
        """The columns the table can show, in their order for this width."""
        params = [k for k in self.trials.params if k not in ("#", "state", "epoch", "time", "worker", *self.metrics)]
        if self.compact:  # the objective, then the params: epoch, time and the other metrics past the edge
            return ["#", "state", *self.metrics[:1], *params, *self.metrics[1:], "epoch", "time", "worker"]
        return ["#", "state", *self.metrics, *params, "epoch", "time", "worker"]

    @property
    def compact(self) -> bool:
        return 0 < self.size.width < COMPACT

    def visible_columns(self) -> list[str]:
        default_hidden = {"worker"} if self.compact else set()
        return [k for k in self.all_columns() if self.view.shown.get(k, k not in default_hidden)]

    # ------------------------------------------------------------ sort, filter, columns

    def _restore_query(self) -> None:
        """The saved filter, if it still makes sense for this study's columns."""
        try:
            self._node = compile_query(self.view.query, self.columns())
        except QueryError:
            self._node = None

    def set_query(self, text: str) -> None:
        """Filter by `text` (empty: every trial); a bad query raises QueryError and changes nothing."""
        self._node = compile_query(text, self.columns())
        self.view.query = text.strip()
        self._save()
        self._reorder()

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        """Sort by a column; the same column again reverses the order."""
        if reverse is None:
            reverse = not self.view.reverse if key == self.view.sort else key in self.metrics
        self.view.sort, self.view.reverse = key, reverse
        self._save()
        self._reorder()

    def set_shown(self, shown: dict[str, bool]) -> None:
        """The columns the user chose to see (the others hidden), by name."""
        self.view.shown = dict(shown)
        self.cursor_col = min(self.cursor_col, max(0, len(self.visible_columns()) - 1))
        self._save()
        self._layout()

    def _save(self) -> None:
        if self.path is not None:
            save_view(self.path, self.view)

    def _reorder(self) -> None:
        """Recompute the rows shown (filter, then a stable sort), keeping the cursor on its trial."""
        keep = self.selected_number()
        cols = self.columns()
        n = self.trials.n
        try:
            mask = evaluate(self._node, cols, n)
        except QueryError:  # a column the saved query names is gone (another study's)
            self._node, mask = None, np.ones(n, dtype=bool)
        positions = np.flatnonzero(mask)
        key = cols.get(self.view.sort) or cols["#"]
        in_order = self.trials.cached("by number", lambda: bool(np.all(np.diff(self.trials.number) > 0)))
        if key is cols["#"] and in_order:  # the trials were read in number order: nothing to sort
            self.order = positions[::-1] if self.view.reverse else positions
        elif isinstance(key, Codes):
            rank = np.argsort(np.argsort([str(v).lower() for v in key.labels], kind="stable"))
            sort_values = np.append(rank, len(rank))[key.codes[positions]].astype(float)  # no value: last
            self.order = self._sorted(positions, sort_values)
        else:
            self.order = self._sorted(positions, key.values[positions])
        self._layout(cols)
        if keep is not None:
            self.select_number(keep, scroll=False)
        else:
            self.cursor_row = min(self.cursor_row, max(0, self.row_count - 1))

    def _sorted(self, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`positions` in the order of `values` (reversed if the view says so), those without a value
        last either way; stable, so ties keep the trial order."""
        values = -values if self.view.reverse else values
        return positions[np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")]

    # ------------------------------------------------------------ columns and widths

    def _layout(self, cols: dict[str, Column] | None = None) -> None:
        """Column specs for the visible columns, widths from each whole column (a few numpy
        reductions, not a pass over formatted cells)."""
        cols = cols if cols is not None else self.columns()
        t = self.trials
        specs = []
        for key in self.visible_columns():
            if key == "#":
                specs.append(self._number_spec(t))
            elif key == "state":
                specs.append(self._state_spec(t))
            elif key == "epoch":
                total = f"/{self.total_epochs}" if self.total_epochs else ""
                top = int(t.epoch.max()) if t.n else 0
                specs.append(Spec("epoch", "epoch", lambda at, s=total: (f"{t.epoch[at]}{s}", ""),
                                  max(5, len(f"{top}{total}")), True))
            elif key == "time":
                spans = cols["time"].values
                longest = duration(float(np.nanmax(spans))) if t.n and not np.isnan(spans).all() else "-"
                specs.append(Spec("time", "time", lambda at: (duration(_running_for(t, at)), ""),
                                  max(4, len(longest) + 1), True))  # a running trial's clock ticks on each draw
            elif key in cols:
                specs.append(self._data_spec(key, cols[key]))
        self._specs = specs
        self.virtual_size = Size(self.size.width, self.row_count + 1)
        self.cursor_col = min(self.cursor_col, max(0, len(specs) - 1))
        self._scroll_columns()
        self.refresh()

    def _number_spec(self, t: Trials) -> Spec:
        width = max(2, len(str(int(t.number.max()))) + 1 if t.n else 2)

        def cell(at: int) -> tuple[str, str]:
            star = int(t.number[at]) == self.best
            return (("★" if star else "") + str(t.number[at]), "bold yellow" if star else "")

        return Spec("#", "#", cell, width, True)

    def _state_spec(self, t: Trials) -> Spec:
        if self.compact:
            return Spec("state", "", lambda at: (STATE_SYMBOL[STATES[t.state[at]]], STATE_STYLE[STATES[t.state[at]]]),
                        1, False)

        def cell(at: int) -> tuple[str, str]:
            state = STATES[t.state[at]]
            retry = t.notes.get(at, {}).get("retry_of")
            return state.lower() + (f" ↻{retry}" if retry is not None else ""), STATE_STYLE[state]

        widest = max((len(s) for s in STATES), default=5) + (4 if any("retry_of" in v for v in t.notes.values()) else 0)
        return Spec("state", "state", cell, widest, False)

    def _data_spec(self, key: str, column: Column) -> Spec:
        if isinstance(column, Codes):
            labels, codes = column.labels, column.codes
            width = min(MAX_TEXT, max([len(key), *(len(str(v)) for v in labels)]))

            def text(at: int) -> tuple[str, str]:
                code = int(codes[at])
                return (str(labels[code]), "") if code >= 0 else ("-", "dim")

            return Spec(key, key, text, width, False)
        values = column.values
        fmt = number_format(values, key in self.trials.ints or key == "#")
        finite = values[np.isfinite(values)]
        ends = (finite.min(), finite.max()) if finite.size else ()
        width = max([len(key), 1, *(len(fmt(float(v))) for v in ends)])

        def number(at: int) -> tuple[str, str]:
            v = float(values[at])
            return (fmt(v), "") if not np.isnan(v) else ("-", "dim")

        return Spec(key, key, number, width, True)

    # ------------------------------------------------------------ drawing

    def _shown_specs(self) -> list[tuple[int, Spec]]:
        """(index, spec) of the columns drawn now: the pinned ones, then from `_first` on as many as fit."""
        width = self.size.width
        out, used = [], 0
        for i, spec in enumerate(self._specs):
            pinned = spec.key in PINNED
            if not pinned and i < self._first:
                continue
            if used + spec.width > width and out:
                break
            out.append((i, spec))
            used += spec.width + 1
        return out

    def _scroll_columns(self) -> None:
        """Move the sideways scroll so the cursor's column is in view."""
        if not self._specs:
            return
        if self._specs[self.cursor_col].key in PINNED:
            return
        self._first = min(self._first, self.cursor_col)
        while self._first < self.cursor_col and self.cursor_col not in [i for i, _ in self._shown_specs()]:
            self._first += 1

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._header(width)
        row = y - 1 + self.scroll_offset.y
        if row >= self.row_count:
            return Strip.blank(width, self.rich_style)
        at = int(self.order[row])
        base = self.rich_style
        if row == self.cursor_row:
            base = base + self.get_component_rich_style("trial-table--cursor")
        elif row % 2:
            base = base + self.get_component_rich_style("trial-table--even")
        segments = []
        for _, spec in self._shown_specs():
            text, style = spec.cell(at)
            text = _fit(text, spec.width, spec.right)
            segments.append(Segment(text, base + Style.parse(style) if style and row != self.cursor_row else base))
            segments.append(Segment(" ", base))
        return Strip(segments).adjust_cell_length(width, base)

    def _header(self, width: int) -> Strip:
        style = self.rich_style + self.get_component_rich_style("trial-table--header")
        current = self.get_component_rich_style("trial-table--column")
        segments = []
        for i, spec in self._shown_specs():
            label = spec.label
            if spec.key == self.view.sort:
                label += "▼" if self.view.reverse else "▲"
            cell = style + current if i == self.cursor_col and self.has_focus else style
            segments.append(Segment(_fit(label, spec.width, spec.right), cell))
            segments.append(Segment(" ", style))
        return Strip(segments).adjust_cell_length(width, style)

    def on_resize(self) -> None:
        self._layout()

    # ------------------------------------------------------------ cursor

    def selected_number(self) -> int | None:
        """The number of the trial under the cursor; None when no trial is shown."""
        if not self.row_count:
            return None
        return int(self.trials.number[self.order[min(self.cursor_row, self.row_count - 1)]])

    def get_row_index(self, number: int | str) -> int:
        """The line of trial `number` in the current order (ValueError if it is filtered out)."""
        at = self.trials.position(int(number))
        hits = np.flatnonzero(self.order == at) if at is not None else []
        if not len(hits):
            raise ValueError(f"trial {number} is not shown")
        return int(hits[0])

    def select_number(self, number: int, scroll: bool = True) -> bool:
        """Put the cursor on trial `number`; False when it is not shown."""
        try:
            row = self.get_row_index(number)
        except ValueError:
            return False
        self.move_cursor(row=row, scroll=scroll)
        return True

    def move_cursor(self, row: int, scroll: bool = True) -> None:
        self.cursor_row = max(0, min(row, self.row_count - 1))
        if scroll:
            self._scroll_to_cursor()
        self.refresh()
        number = self.selected_number()
        if number is not None and number != self._highlighted:
            self._highlighted = number
            self.post_message(self.Highlighted(number))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)  # the header takes a line
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def action_move(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.size.height - 2))

    def action_edge(self, end: int) -> None:
        self.move_cursor(self.row_count - 1 if end else 0)

    def action_column(self, delta: int) -> None:
        self.cursor_col = max(0, min(self.cursor_col + delta, len(self._specs) - 1))
        self._scroll_columns()
        self.refresh()

    def action_select(self) -> None:
        number = self.selected_number()
        if number is not None:
            self.post_message(self.Selected(number))

    def action_sort(self) -> None:
        if self._specs:
            key = self._specs[self.cursor_col].key
            self.sort_by(key)
            self.notify(f"sorted by {key}, {'descending' if self.view.reverse else 'ascending'}")

    def action_state_filter(self) -> None:
        """Cycle through the states (a filter query like any other)."""
        now = self.view.query if self.view.query in STATE_FILTERS else ""
        self.set_query(STATE_FILTERS[(STATE_FILTERS.index(now) + 1) % len(STATE_FILTERS)])
        self.notify(f"showing {self.view.query or 'all trials'}")

    def action_filter(self) -> None:
        from tui_hpo.screens.table_dialogs import QueryDialog

        def done(text: str | None) -> None:
            if text is None:
                return
            try:
                self.set_query(text)
            except QueryError as error:
                self.notify(str(error), title="filter not applied", severity="error")
                return
            self.notify(f"{self.row_count} of {self.trials.n} trials: {text}" if text.strip() else "every trial")

        self.app.push_screen(QueryDialog(self.view.query, list(self.columns())), done)

    def action_columns(self) -> None:
        from tui_hpo.screens.table_dialogs import ColumnChooser

        visible = set(self.visible_columns())
        choices = [(key, key in visible) for key in self.all_columns()]

        def done(chosen: list[str] | None) -> None:
            if chosen is not None:
                self.set_shown({key: key in chosen for key, _ in choices})

        self.app.push_screen(ColumnChooser(choices), done)

    def on_click(self, event: events.Click) -> None:
        """A header sorts by its column; a row is highlighted, and opened when it already was."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = 0
            for i, spec in self._shown_specs():
                if x <= offset.x < x + spec.width + 1:
                    self.cursor_col = i
                    self.sort_by(spec.key)
                    return
                x += spec.width + 1
            return
        row = offset.y - 1 + self.scroll_offset.y
        if row < self.row_count:
            if row == self.cursor_row:
                self.action_select()
            else:
                self.move_cursor(row)


def _running_for(t: Trials, at: int) -> float:
    """Seconds trial `at` ran, until now if it still runs (NaN: not started)."""
    end = float(t.complete[at])
    return (clock.now() if np.isnan(end) else end) - float(t.start[at])


def _fit(text: str, width: int, right: bool) -> str:
    """`text` in exactly `width` cells: padded, or cut with an ellipsis."""
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.rjust(width) if right else text.ljust(width)
