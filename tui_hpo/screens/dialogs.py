"""Modal dialogs: leaving while a sweep runs, and the key help."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]Screens[/b]
  1  system: this machine, live gauges, the platform profile
  3  dashboard: the sweep, live
  4  trial detail of the selected trial
  5  studies in this workspace
  ?  this help        q  quit        ctrl+p  command palette

[b]Dashboard[/b]
  p  pause / resume the sweep (running trials finish)
  x  stop the sweep (running trials end, and rerun on resume)
  k  prune the selected running trial after its epoch
  +/-  one more / one fewer trial in the budget
  enter  trial detail     s  sort     f  filter by state

[b]Studies[/b]
  enter  watch a study    r  resume a stopped sweep

The sweep runs in its own process: leaving the TUI (or losing SSH) does not stop it.
Come back with `tui-hpo attach` or `./run_experiments.sh`.
"""


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(HELP, id="help-text")

    def action_dismiss(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[str | None]):
    """`q` while a sweep runs: leave it running, stop it, or stay."""
    CSS_PATH = "dialogs.tcss"

    BINDINGS = [
        Binding("l", "choose('leave')", "leave it running"),
        Binding("s", "choose('stop')", "stop it"),
        Binding("escape", "choose(None)", "cancel"),
    ]

    def __init__(self, study: str) -> None:
        super().__init__()
        self.study = study

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold yellow", justify="right")
        keys.add_column()
        keys.add_row("l", "leave it running and quit (attach again later)")
        keys.add_row("s", "stop the sweep and quit")
        keys.add_row("escape", "stay")
        with Vertical(id="quit-box"):
            yield Static(Group(Text(f"The sweep '{self.study}' is still running.\n", style="bold"), keys),
                         id="quit-text")

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
