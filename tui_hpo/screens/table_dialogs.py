"""The trial table's two dialogs: the filter query (`/`) and the column chooser (`c`)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, SelectionList, Static

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 70; max-width: 95%; height: auto; max-height: 90%;
    border: round $primary; background: $surface; padding: 0 1;
}}
{name} .hint {{ color: $text-muted; }}
"""


class QueryDialog(ModalScreen[str | None]):
    """One line for the filter; enter applies it (empty: every trial), escape keeps the old one."""

    DEFAULT_CSS = DIALOG_CSS.format(name="QueryDialog")
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, query: str, columns: list[str]) -> None:
        super().__init__()
        self.query_text = query
        self.column_names = columns

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "filter trials"
            yield Input(self.query_text, placeholder="lr < 1e-3 and state == complete", id="query")
            yield Static("== != < <= > >=, in (a, b), and, or, not, ( ); empty: every trial\n"
                         f"columns: {', '.join(self.column_names)}", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ColumnChooser(ModalScreen[list[str] | None]):
    """Every column with a check box (space toggles); enter keeps the choice, in the table's order."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ColumnChooser")
    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("enter", "done", "done", priority=True)]

    def __init__(self, columns: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.choices = columns

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "columns"
            yield SelectionList[str](*((key, key, shown) for key, shown in self.choices), id="columns")
            yield Static("space: show / hide   enter: done   escape: cancel", classes="hint")

    def action_done(self) -> None:
        chosen = set(self.query_one(SelectionList).selected)
        self.dismiss([key for key, _ in self.choices if key in chosen])

    def action_cancel(self) -> None:
        self.dismiss(None)
