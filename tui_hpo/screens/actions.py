"""Trial actions, shared by the dashboard and the trial screen: enqueue a trial with chosen params
(`a`), fail and retry a stuck one (`r`), copy params (`y`), and notes on trials and studies (`n`).

Each action is a flow: what it needs is read in a thread worker, a dialog asks, the write runs in
another thread worker (Optuna's storage calls may wait on a busy database), and a notification
says what happened. The dialogs are the `ModalScreen`s below; the writes are `tui_hpo.control`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, Static, TextArea

from engine.storage.states import SweepState
from tui_hpo import notes
from tui_hpo.clipboard import FORMATS, copy
from tui_hpo.control import Queued
from tui_hpo.db import StudyRow, TrialRow
from tui_hpo.enqueue import ConfigSpace, TrialSpace, domains_of
from tui_hpo.format import duration

T = TypeVar("T")
GROUP = "trial action"  # the workers' group: a failure is shown as "trial action failed"
ENDED = (SweepState.FINISHED, SweepState.STOPPED, SweepState.STOPPING)
NAME_WIDTH = 28  # the enqueue form's widest name column; a longer Optuna name is cut


def in_thread(screen: Screen, work: Callable[[], T], then: Callable[[T], None] | None = None) -> None:
    """`work()` in a thread worker of `screen`, then `then(result)` on the UI thread. A failure is
    shown by the screen (`WorkerScreen`): the app goes on."""

    def run() -> None:
        result = work()
        if then is not None:
            screen.app.call_from_thread(then, result)

    screen.run_worker(run, thread=True, exit_on_error=False, group=GROUP)


# ------------------------------------------------------------------ enqueue


def enqueue(screen: Screen, study: StudyRow, row: TrialRow | None) -> None:
    """`a`: a form prefilled from `row`'s params; what it gives is queued as the next trial."""
    app = screen.app

    def load() -> ConfigSpace | TrialSpace | None:
        config = app.reader.sweep_config(study.study_id) if study.state != SweepState.EXTERNAL else {}
        if config:
            from engine.config import SweepConfig

            sweep = SweepConfig.model_validate(config)
            return ConfigSpace(sweep.search_space, sweep.fixed(), row.params if row else {})
        if row is None or not row.params:
            return None
        from engine.storage import optuna_storage

        trial = optuna_storage(app.url, heartbeat=False, readonly=True).get_trial(row.trial_id)
        return TrialSpace(domains_of(trial.distributions), trial.params)

    def ask(space: ConfigSpace | TrialSpace | None) -> None:
        if space is None or not space.fields:
            screen.notify("a plain Optuna study's space is known from its trials' params: select a trial that has "
                          "them", severity="warning")
            return
        origin = f" (from trial {row.number})" if row is not None and row.params else ""
        app.push_screen(EnqueueScreen(f"enqueue a trial in '{study.name}'{origin}", space, budget_line(study)),
                        write)

    def write(point: dict[str, Any] | None) -> None:
        if point is None:
            return
        sweep = study.state != SweepState.EXTERNAL
        in_thread(screen, lambda: app.control.enqueue(study.name, study.study_id, point, sweep=sweep), said)

    def said(queued: Queued) -> None:
        budget = f"; the budget grew to {queued.n_trials} trials so that it runs" if queued.raised else ""
        screen.notify(f"trial {queued.number} queued: {_when_it_runs(study)}{budget}", title="enqueued", timeout=8)

    in_thread(screen, load, ask)


def budget_line(study: StudyRow) -> str:
    """Where a queued trial stands in the budget, said before it is queued."""
    if study.state == SweepState.EXTERNAL:
        return "A plain Optuna study: the next trial its own optimize() asks for is this one."
    n_trials = study.n_trials or 0
    left = n_trials - study.done - study.counts.get("RUNNING", 0) - study.counts.get("WAITING", 0)
    budget = (f"It takes one of the {left} trial(s) left in the budget of {n_trials}." if left > 0 else
              f"The budget of {n_trials} is spoken for: it grows by one, so that this trial runs.")
    return f"{_when_it_runs(study).capitalize()}. {budget}"


def _when_it_runs(study: StudyRow) -> str:
    if study.state == SweepState.PAUSED:
        return "it runs first once the sweep is resumed (p)"
    if study.state in ENDED:
        return f"the sweep is {study.state}: it runs first when the sweep is resumed (5, then r)"
    if study.state == SweepState.EXTERNAL:
        return "the study's next optimize() runs it first"
    return "it runs next"


class EnqueueScreen(ModalScreen[dict[str, Any] | None]):
    """The form: one input per parameter, prefilled; every change is checked against the space,
    and the first problem is said in one line. Enter queues the trial, escape cancels."""

    CSS_PATH = "actions.tcss"
    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("enter,ctrl+s,f2", "submit", "queue it")]

    def __init__(self, title: str, space: ConfigSpace | TrialSpace, budget: str) -> None:
        super().__init__()
        self.title_text, self.space, self.budget = title, space, budget

    def compose(self) -> ComposeResult:
        with Vertical(id="enqueue-box", classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            with VerticalScroll(id="enqueue-fields", can_focus=False):
                for i, field in enumerate(self.space.fields):
                    with Horizontal(classes="enqueue-row"):
                        yield Label(field.name, classes="enqueue-name")
                        yield Input(field.value, placeholder="sampler chooses", id=f"field-{i}",
                                    classes="enqueue-input")
                        yield Label(Text(field.hint, style="dim"), classes="enqueue-hint")
            yield Static(id="enqueue-check")
            yield Static(Text(self.budget, style="dim"), id="enqueue-budget")
            yield Static(Text.assemble(("enter", "bold"), " queue it   ", ("escape", "bold"), " cancel   ",
                                       ("tab", "bold"), " next   empty: the sampler chooses", style="dim"),
                         classes="dialog-keys")

    def on_mount(self) -> None:
        width = min(NAME_WIDTH, max(len(field.name) for field in self.space.fields) + 2)
        for label in self.query(".enqueue-name"):
            label.styles.width = width  # the inputs in one column, as narrow as the names allow
        self.query_one("#field-0", Input).focus()
        self._check()

    def typed(self) -> dict[str, str]:
        return {field.name: self.query_one(f"#field-{i}", Input).value for i, field in enumerate(self.space.fields)}

    def _check(self) -> dict[str, Any] | None:
        """The params by Optuna name, or None with the problem shown."""
        line = self.query_one("#enqueue-check", Static)
        try:
            point = self.space.check(self.typed())
        except ValueError as exc:
            line.update(Text(str(exc), style="bold red"))
            return None
        line.update(Text(f"ok: {len(point)} value(s) fixed", style="green"))
        return point

    @on(Input.Changed)
    def _changed(self) -> None:
        self._check()

    @on(Input.Submitted)
    def action_submit(self) -> None:
        point = self._check()
        if point is not None:
            self.dismiss(point)

    def action_cancel(self) -> None:
        self.dismiss(None)


# ------------------------------------------------------------------ fail and retry


def retry(screen: Screen, study: StudyRow, row: TrialRow) -> None:
    """`r`: fail a running trial the user judges stuck and queue its params again, once confirmed."""
    if study.state == SweepState.EXTERNAL:
        screen.notify("this study was not created by tui-hpo: it cannot be steered", severity="warning")
        return
    if row.state != "RUNNING":
        screen.notify("select a running trial: only a running trial can be failed and retried", severity="warning")
        return
    app = screen.app
    where = f"on {row.worker}" if row.worker else "on no worker yet"
    question = Text.assemble(
        (f"Fail trial {row.number} and run its params again?\n\n", "bold"),
        f"It has run for {duration(row.duration())} {where}, {row.epoch} epoch(s) done. It is marked failed "
        f"(\"failed from the TUI\"), its budget slot is given back, and a new trial with the same params is "
        "queued to run next.\n\nFor a trial whose worker is gone or hung: a worker still training it drops the "
        "trial at its next report and goes on with the next one.")

    def chosen(yes: bool | None) -> None:
        if yes:
            in_thread(screen, work, said)

    def work() -> int | str:
        try:
            return app.control.fail_and_retry(study.name, study.study_id, row.number)
        except ValueError as exc:
            return str(exc)

    def said(result: int | str) -> None:
        if isinstance(result, str):
            screen.notify(result, severity="warning")
        else:
            screen.notify(f"trial {row.number} failed from the TUI; its params run again as trial {result}",
                          title="retried", timeout=8)

    app.push_screen(ConfirmScreen(question, "fail and retry"), chosen)


class ConfirmScreen(ModalScreen[bool]):
    """A question with a yes (y: never enter, which a hurried user presses by habit) and a no."""

    CSS_PATH = "actions.tcss"
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: Text, verb: str) -> None:
        super().__init__()
        self.question, self.verb = question, verb

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Static(self.question)
            yield Static(Text.assemble(("y", "bold"), f" {self.verb}   ", ("n", "bold"), " or ",
                                       ("escape", "bold"), " cancel", style="dim"), classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


# ------------------------------------------------------------------ copy


def copy_params(screen: Screen, row: TrialRow) -> None:
    """`y`: the trial's params as YAML or CLI flags, on the clipboard (OSC 52)."""
    if not row.params:
        screen.notify(f"trial {row.number} has no params yet", severity="warning")
        return

    def chosen(key: str | None) -> None:
        if key is not None:
            label, render = FORMATS[key]
            copy(screen.app, render(row.params), f"trial {row.number}'s params as {label}")

    screen.app.push_screen(CopyScreen(row), chosen)


class CopyScreen(ModalScreen[str | None]):
    """Which form to copy, each shown as it will be pasted."""

    CSS_PATH = "actions.tcss"
    BINDINGS = [Binding("y", "choose('yaml')", "YAML"), Binding("f", "choose('flags')", "CLI flags"),
                Binding("escape", "choose(None)", "cancel")]

    def __init__(self, row: TrialRow) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        with Vertical(id="copy-box", classes="dialog"):
            yield Static(Text(f"copy trial {self.row.number}'s params", style="bold"), classes="dialog-title")
            for key, (label, render) in FORMATS.items():
                yield Static(Text.assemble((key[0], "bold yellow"), f"  {label}"))
                yield Static(Text(render(self.row.params).rstrip("\n")), classes="copy-preview")
            yield Static(Text.assemble(("escape", "bold"), " cancel   copied with OSC 52: over SSH too, to the "
                                       "clipboard where your terminal runs", style="dim"), classes="dialog-keys")

    def action_choose(self, key: str | None) -> None:
        self.dismiss(key)


# ------------------------------------------------------------------ notes


def edit_note(screen: Screen, study: StudyRow, row: TrialRow | None, saved: Callable[[], None] | None = None) -> None:
    """`n` (a trial's note) or `N` (the study's): the note in an editor; saved as optuna-dashboard
    saves it, refused (and offered again) when someone saved another version meanwhile."""
    app = screen.app
    trial_id = row.trial_id if row is not None else None
    what = f"trial {row.number}" if row is not None else f"study '{study.name}'"

    def ask(note: notes.Note, warning: str | None = None, text: str | None = None) -> None:
        """The editor on `text` (the stored note's body unless given); saving writes over `note`."""
        app.push_screen(NoteScreen(f"note on {what}", note.body if text is None else text, warning),
                        lambda body: write(note, body))

    def write(note: notes.Note, body: str | None) -> None:
        if body is None or body == note.body:
            return

        def work() -> notes.Note | notes.NoteConflict:
            try:
                return app.control.save_note(study.study_id, trial_id, body, note.version)
            except notes.NoteConflict as exc:
                return exc

        def said(result: notes.Note | notes.NoteConflict) -> None:
            if isinstance(result, notes.NoteConflict):
                ask(result.current, f"saved elsewhere meanwhile (optuna-dashboard?): saving again replaces it; "
                                    f"it now reads: {result.current.body[:120]!r}", text=body)
                return
            screen.notify(f"note on {what} saved (optuna-dashboard shows it too)", title="note")
            if saved is not None:
                saved()

        in_thread(screen, work, said)

    in_thread(screen, lambda: notes.load(app.url, study.study_id, trial_id), ask)


class NoteScreen(ModalScreen[str | None]):
    """A Markdown note in a text area; ctrl+s (or F2) saves, escape leaves it as it was."""

    CSS_PATH = "actions.tcss"
    BINDINGS = [Binding("ctrl+s,f2", "save", "save"), Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, body: str, warning: str | None = None) -> None:
        super().__init__()
        self.title_text, self.body, self.warning = title, body, warning

    def compose(self) -> ComposeResult:
        with Vertical(id="note-box", classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            if self.warning:
                yield Static(Text(self.warning, style="bold yellow"), id="note-warning")
            yield TextArea(self.body, soft_wrap=True, id="note-text")
            yield Static(Text.assemble(("ctrl+s", "bold"), "/", ("F2", "bold"), " save   ", ("escape", "bold"),
                                       " cancel   Markdown, shown by optuna-dashboard too", style="dim"),
                         classes="dialog-keys")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


def note_text(note: notes.Note) -> Text | Any:
    """A note for a panel: its Markdown rendered, or what `n` does where there is none."""
    if not note.body.strip():
        return Text("no note: n writes one (Markdown; optuna-dashboard shows the same notes)", style="dim")
    from rich.markdown import Markdown

    return Markdown(note.body)
