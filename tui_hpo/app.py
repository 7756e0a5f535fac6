"""The Textual app: screens switched by number keys, one read-only database reader, and a
writer for commands only. It never imports torch: the engine is a separate process.

Besides the screens' own polls, the app polls the studies every NEWS_POLL_S to tell the user
(a bell, a desktop notification: tui_hpo.notify) when the watched sweep finishes or stops, keeps
failing, or finds a new best, whichever screen is in view."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.theme import Theme

from engine.artifacts import write_atomic
from engine.storage import Workspace
from engine.storage.states import ACTIVE
from engine.sweep.notify import Event, Notice, Snapshot, Watch
from tui_hpo.db import Reader, StudyRow
from tui_hpo.launch import EngineProcess, RunArgs, start_engine
from tui_hpo.notify import sequences
from tui_hpo.screens.analysis import AnalysisScreen
from tui_hpo.screens.dashboard import DashboardScreen
from tui_hpo.screens.dialogs import HelpScreen, QuitScreen, key_groups
from tui_hpo.screens.studies import StudiesScreen
from tui_hpo.screens.system import SystemScreen
from tui_hpo.screens.wizard import WizardScreen

NEWS_POLL_S = 3.0
DARK, LIGHT = "textual-dark", "textual-light"  # ctrl+t switches; the command palette offers every theme
SEVERITY = {Event.FAILURES: "error", Event.STOPPED: "warning"}  # of a notice's toast; others: information


def user_settings() -> Path:
    """Where the app remembers the user's choices (the theme): $XDG_CONFIG_HOME/tui-hpo/tui.json."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tui-hpo" / "tui.json"


def read_settings(path: Path | None) -> dict[str, Any]:
    """The remembered choices; none when there is no file or it cannot be read (never an error)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class HpoApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "tui-hpo"
    MODES = {"system": SystemScreen, "wizard": WizardScreen, "dashboard": DashboardScreen, "studies": StudiesScreen,
             "analysis": AnalysisScreen}
    BINDINGS = [
        Binding("1", "switch_mode('system')", "system"),
        Binding("2", "switch_mode('wizard')", "wizard"),
        Binding("3", "switch_mode('dashboard')", "dashboard"),
        Binding("4", "trial", "trial", show=False),
        Binding("5", "switch_mode('studies')", "studies"),
        Binding("6", "switch_mode('analysis')", "analysis"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "leave", "quit"),
        Binding("ctrl+t", "toggle_theme", "light/dark theme", show=False),
    ]

    class News(Message):
        """The studies, read for notices (None: the read failed; the next one comes anyway)."""

        def __init__(self, studies: list[StudyRow] | None) -> None:
            super().__init__()
            self.studies = studies

    def __init__(self, workspace: Workspace, study: str | None = None, mode: str = "dashboard",
                 engine: EngineProcess | None = None, settings: Path | None = None) -> None:
        """`settings`: the file the theme is remembered in (the CLI's `user_settings()`); None
        remembers nothing, so tests and screenshots never depend on the user's choices."""
        super().__init__()
        self.workspace = workspace
        self.workdir = self.workspace.workdir
        self.url = self.workspace.url
        self.storage_label = self.workspace.label
        self.study_name = study
        self.start_mode = mode
        self.engine = engine
        self.reader: Reader | None = Reader(self.url)
        self._control: Any = None
        self.worker_errors: list[str] = []
        self.settings = settings
        self.watch: Watch | None = None  # the watched sweep's notices
        self.news_polls = 0  # polls for notices seen so far (a test waits for the next ones)

    @property
    def control(self) -> Any:
        """The command writer, opened on first use: a viewer that only watches never writes."""
        if self._control is None:
            from tui_hpo.control import Control

            self._control = Control(self.url)
        return self._control

    def on_resize(self) -> None:
        """Below 100 columns or 30 rows the side panels and charts shrink (see app.tcss)."""
        self.set_class(self.size.width < 100 or self.size.height < 30, "-narrow")

    def on_mount(self) -> None:
        self.sub_title = self.storage_label
        theme = read_settings(self.settings).get("theme")
        if theme in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.switch_mode(self.start_mode)
        if self.engine is not None:
            self.set_timer(2.0, self._check_engine)
        self.set_timer(NEWS_POLL_S, self._read_news)

    # ------------------------------------------------------------ theme

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.current_theme.dark else DARK

    def _remember_theme(self, theme: Theme) -> None:
        """Any theme change (ctrl+t, the command palette) is the next start's theme."""
        if self.settings is None or read_settings(self.settings).get("theme") == theme.name:
            return
        with contextlib.suppress(OSError):  # a read-only home: not remembered, never an error
            write_atomic(self.settings, json.dumps({**read_settings(self.settings), "theme": theme.name}) + "\n")

    # ------------------------------------------------------------ notices

    @work(thread=True, exclusive=True, exit_on_error=False, group="news")
    def _read_news(self) -> None:
        try:
            studies = self.reader.studies() if self.reader is not None else None
        except Exception:  # the engine may still be creating its tables; a screen shows read errors
            studies = None
        self.post_message(self.News(studies))

    @on(News)
    def _news(self, message: News) -> None:
        self.news_polls += 1
        self.set_timer(NEWS_POLL_S, self._read_news)
        study = self._watched(message.studies or [])
        if study is None:
            return
        if self.watch is None or self.watch.study != study.name:  # a new watch: its first look is no news
            self.watch = Watch(study.name, maximize=not study.directions or study.directions[0] == "maximize")
        for notice in self.watch.see(Snapshot(study.state, study.counts, study.best, study.n_trials)):
            self.tell(notice)

    def tell(self, notice: Notice) -> None:
        """A notice as a bell and a desktop notification in the user's terminal, and a toast here."""
        self.terminal_write(sequences(notice.message, os.environ))
        self.notify(notice.message, title=f"sweep {notice.event}", severity=SEVERITY.get(notice.event, "information"),
                    timeout=15)

    def terminal_write(self, text: str) -> None:
        """Raw output to the terminal, between Textual's frames; Textual has no public call for
        it (its own copy_to_clipboard writes OSC 52 the same way). Nothing in a headless test."""
        if self._driver is not None and not self.is_headless:
            self._driver.write(text)

    def _watched(self, studies: list[StudyRow]) -> StudyRow | None:
        """The study the app watches: the one named, else the newest."""
        name = self.study_name or (studies[-1].name if studies else None)
        return next((s for s in studies if s.name == name), None)

    def _check_engine(self) -> None:
        """An engine that exits at once had bad input: show its one-line error."""
        if self.engine is None:
            return
        code = self.engine.exited()
        if code is None:
            self.set_timer(2.0, self._check_engine)
        elif code not in (0, 130):
            self.notify(self.engine.error_line() or f"the engine exited with code {code}", title="engine failed",
                        severity="error", timeout=30)

    def show_study(self, name: str) -> None:
        """Show this study on the dashboard (which notices the change and starts afresh)."""
        self.study_name = name
        self.switch_mode("dashboard")

    @on(StudiesScreen.Show)
    def _show(self, message: StudiesScreen.Show) -> None:
        self.show_study(message.name)

    @on(WizardScreen.Start)
    def _start(self, message: WizardScreen.Start) -> None:
        """The wizard's Start: the engine in the background, the dashboard on its study."""
        self._launch(RunArgs(config_file=str(message.config)), message.name,
                     f"sweep '{message.name}' starting in the background (its log: "
                     f"{self.workdir / message.name / 'engine.log'})")

    @on(StudiesScreen.Resume)
    def _resume(self, message: StudiesScreen.Resume) -> None:
        """A stopped study again: its saved config comes from the database."""
        self._launch(RunArgs(resume=True), message.name, f"resuming '{message.name}' in the background")

    def _launch(self, args: RunArgs, name: str, note: str) -> None:
        self.engine = start_engine(args, self.workspace, name)
        self.notify(note)
        self.set_timer(2.0, self._check_engine)
        self.show_study(name)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(key_groups(self.screen)))  # the keys of the screen in view, before it is covered

    def action_trial(self) -> None:
        screen = self.screen
        if isinstance(screen, DashboardScreen):
            from tui_hpo.widgets.trial_table import TrialTable

            row = screen.query_one(TrialTable).selected_number()
            if row is not None and screen.study is not None:
                from tui_hpo.screens.trial import TrialScreen

                self.push_screen(TrialScreen(screen.study, row))

    def action_leave(self) -> None:
        study = self._running_study()
        if study is None:
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                self.control.stop(study.study_id)
                self.exit(message=f"Stopping sweep '{study.name}'.")
            elif choice == "leave":
                self.exit(message=f"The sweep '{study.name}' goes on. Attach again with: "
                                  f"tui-hpo attach --workdir {self.workdir} --study {study.name}")

        self.push_screen(QuitScreen(study.name), chosen)

    def _running_study(self) -> Any:
        if self.reader is None:
            return None
        try:
            studies = self.reader.studies()
        except Exception:
            return None
        study = self._watched(studies)
        if study is None or study.state not in ACTIVE:
            return None
        launched = self.engine is not None and self.engine.exited() is None
        return study if launched or self.reader.live_workers(study.study_id) else None

    def on_unmount(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self._control is not None:
            self._control.close()


def make_app(workdir: str | Path = "runs", storage: str | None = None, **kwargs: Any) -> HpoApp:
    """The one factory the CLI and the tests use: the app on the workspace WORKDIR (or STORAGE)."""
    return HpoApp(Workspace(Path(workdir), storage), **kwargs)
