"""Modal dialogs: leaving while a sweep runs, and the key help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

# Said after the keys: what the keys cannot show.
PROSE = (
    "The sweep runs in its own process: leaving the TUI (or losing SSH) does not stop it. Come back with "
    "`tui-hpo attach` or `./run_experiments.sh`.\n"
    "A bell and a desktop notification say when the watched sweep finishes, keeps failing or finds a new "
    "best (TUI_HPO_NOTIFY=off silences them)."
)


@dataclass(frozen=True)
class KeyGroup:
    title: str  # where the keys work
    keys: list[tuple[str, str]]  # (key, what it does)
    compact: bool = False  # a focused widget's moves: one paragraph, not a line each


def key_groups(screen: Screen) -> list[KeyGroup]:
    """Every key bound where the user is, with its description: the screen's own, the focused
    widget's, then the app's. Read from the bindings themselves, so a new key is listed without
    anyone editing a help text; a key bound twice is listed where it acts (Textual's choice)."""
    found: dict[int, tuple[int, KeyGroup]] = {}
    for active in screen.active_bindings.values():
        binding, node = active.binding, active.node
        if binding.system or not binding.description:
            continue
        if id(node) not in found:
            if node is screen.app:
                found[id(node)] = (2, KeyGroup("Everywhere", []))
            elif node is screen:
                found[id(node)] = (0, KeyGroup(f"This screen ({_screen_name(screen)})", []))
            else:
                found[id(node)] = (1, KeyGroup(f"In the {_widget_name(node)} in focus", [], compact=True))
        keys = found[id(node)][1].keys
        shown, what = screen.app.get_key_display(binding), _plain(binding.tooltip or binding.description)
        same = next((i for i, (_key, other) in enumerate(keys) if other == what), None)
        if same is None:
            keys.append((shown, what))
        elif shown not in keys[same][0].split("/"):  # one line for one action's keys: +/- for the budget
            keys[same] = (f"{keys[same][0]}/{shown}", what)
    for _rank, group in found.values():  # Textual's own (focus, copy: `app.`, `screen.`) after the screen's
        group.keys.sort(key=lambda k: k[1] in _INHERITED)
    return [group for _rank, group in sorted(found.values(), key=lambda found: found[0])]


_INHERITED = ("focus next", "focus previous", "copy selected text")


def _plain(description: str) -> str:
    """Textual's own descriptions say "Page Left" and "Quit the app."; ours "prune": alike here."""
    words = description.rstrip(".").split(" ")
    return " ".join(w if len(w) > 1 and w.isupper() else w.lower() for w in words)


def _screen_name(screen: Screen) -> str:
    return type(screen).__name__.removesuffix("Screen").lower()


def _widget_name(node: object) -> str:
    name = type(node).__name__
    return "table" if "Table" in name else "panel" if "Scroll" in name else "text field" if "Input" in name \
        else name.lower()


class HelpScreen(ModalScreen[None]):
    """The keys of the screen in view (`key_groups`, taken before this one covers it), then PROSE."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def __init__(self, groups: list[KeyGroup]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        parts: list[Any] = []
        for group in self.groups:
            parts.append(Text(group.title, style="bold"))
            if group.compact:
                # no-break spaces: a key and its words wrap together
                moves = (Text.assemble((key, "bold yellow"), "\u00a0", what.replace(" ", "\u00a0"))
                         for key, what in group.keys)
                parts.append(Text("   ").join(moves))
            else:
                grid = Table.grid(padding=(0, 1), expand=True)
                for _pair in range(2):  # two keys a line: a screen's keys fit 80x24 more often
                    grid.add_column(style="bold yellow", justify="right", no_wrap=True)
                    grid.add_column(ratio=1)
                for i in range(0, len(group.keys), 2):
                    grid.add_row(*group.keys[i], *(group.keys[i + 1] if i + 1 < len(group.keys) else ("", "")))
                parts.append(grid)
            parts.append(Text())
        with VerticalScroll(id="help-box"):
            yield Static(Group(*parts, Text(PROSE, style="dim")), id="help-text")

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
