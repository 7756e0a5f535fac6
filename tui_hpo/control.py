"""Steering a sweep from the TUI. Every command is a write to the database, which the engine and
its workers poll, so a command reaches workers on other machines exactly as it reaches local ones.

Trial actions go through Optuna's own API on the same storage: an enqueued trial is Optuna's
WAITING trial with fixed params (`Study.enqueue_trial`), which the next `ask()` of any worker
takes; a retry is the recovery's own requeue (`engine.sweep.recovery`); notes are study system
attributes in optuna-dashboard's format (`tui_hpo.notes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.storage import Store, load_study, optuna_storage
from engine.storage.states import EventKind, SweepState, finished_count
from tui_hpo import notes
from tui_hpo.format import params as params_text

FAILED_FROM_TUI = "failed from the TUI"
ENQUEUED = {"enqueued": "from the TUI"}  # the user attribute that tells a trial queued by hand


@dataclass(frozen=True)
class Queued:
    """A trial put in the queue: its number, and the sweep's budget after it."""

    number: int
    n_trials: int | None  # None: a plain Optuna study, which has no budget of ours
    raised: bool  # the budget was spoken for (running and queued trials), so it grew to take this one


class Control:
    """The one writer the TUI has: a handful of small, separate transactions."""

    def __init__(self, url: str) -> None:
        self.url = url

    @cached_property
    def store(self) -> Store:
        """Our tables, opened on the first command that writes them: a note or an enqueued trial
        on a plain Optuna study writes Optuna's tables only, and adds none of ours to its database."""
        return Store(self.url)

    def pause(self, study_id: int) -> None:
        """Running trials finish; no new trial starts until resumed."""
        self.store.update_sweep(study_id, state=SweepState.PAUSED)
        self.store.add_event(study_id, EventKind.COMMAND, "paused from the TUI")

    def resume(self, study_id: int) -> None:
        self.store.update_sweep(study_id, state=SweepState.RUNNING)
        self.store.add_event(study_id, EventKind.COMMAND, "resumed from the TUI")

    def stop(self, study_id: int) -> None:
        """Workers stop at the next batch; running trials end as interrupted and rerun on resume."""
        self.store.update_sweep(study_id, state=SweepState.STOPPING)
        self.store.add_event(study_id, EventKind.COMMAND, "stop requested from the TUI")

    def prune(self, study_id: int, trial_number: int) -> None:
        """The worker running the trial prunes it after its current epoch."""
        self.store.add_command(study_id, "prune", trial_number)
        self.store.add_event(study_id, EventKind.COMMAND, f"prune of trial {trial_number} requested from the TUI",
                             trial_number=trial_number)

    def change_budget(self, study_id: int, delta: int, floor: int) -> int:
        """Add `delta` to n_trials, never below `floor` (trials already finished or running)."""
        row = self.store.sweep_by_id(study_id)
        if row is None:
            raise ValueError(f"study {study_id} is not a tui-hpo sweep")
        n_trials = max(floor, 1, row.n_trials + delta)
        self.store.update_sweep(study_id, n_trials=n_trials)
        self.store.add_event(study_id, EventKind.COMMAND, f"budget set to {n_trials} trials from the TUI")
        return n_trials

    # ------------------------------------------------------------ trials

    def enqueue(self, study_name: str, study_id: int, params: dict[str, Any], sweep: bool = True) -> Queued:
        """Queue a trial with `params` (by Optuna name; the rest are the sampler's): the next trial
        a worker asks for. It takes a slot of the budget like any trial (as an enqueued trial counts
        towards `optimize(n_trials=...)`); where the slots left are all spoken for by running and
        queued trials, the budget grows by one, so the trial the user asked for does run."""
        import optuna

        study = load_study(self.url, study_name)
        study.enqueue_trial(params, user_attrs=dict(ENQUEUED))
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,
                                                           optuna.trial.TrialState.RUNNING))
        number = max(t.number for t in waiting if t.system_attrs.get("fixed_params") == params
                     and t.user_attrs.get("enqueued") == ENQUEUED["enqueued"])
        if not sweep:
            return Queued(number, None, False)
        row = self.store.sweep_by_id(study_id)
        if row is None:
            raise ValueError(f"study {study_id} is not a tui-hpo sweep")
        counts = self.store.state_counts(study_id)
        wanted = finished_count(counts) + counts.get("RUNNING", 0) + counts.get("WAITING", 0)
        raised = wanted > row.n_trials
        if raised:
            self.store.update_sweep(study_id, n_trials=wanted)
        self.store.add_event(study_id, EventKind.COMMAND, f"trial {number} queued from the TUI: {params_text(params)}"
                             + (f"; budget raised to {wanted} trials" if raised else ""), trial_number=number)
        return Queued(number, wanted if raised else row.n_trials, raised)

    def fail_and_retry(self, study_name: str, study_id: int, number: int) -> int:
        """Fail a running trial the user judges stuck (its worker gone, or hung) and queue its
        params again, as the recovery does for a dead worker's trial; its budget slot is given
        back, and the rerun takes one. The user's retry is always queued: it uses up none of
        `budget.max_retries`. Returns the rerun's number."""
        import optuna

        from engine.sweep.recovery import fail_and_requeue

        study = load_study(self.url, study_name)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        trial = next((t for t in running if t.number == number), None)
        if trial is None or not fail_and_requeue(study, self.store, study_id, trial, FAILED_FROM_TUI,
                                                 max_retries=int(trial.user_attrs.get("retries", 0)), counts=False):
            raise ValueError(f"trial {number} is no longer running: nothing to retry")
        self.store.release(study_id)
        first = [*trial.system_attrs.get("retry_history", []), trial.number][0]  # what requeue names it by
        queued = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,
                                                          optuna.trial.TrialState.RUNNING))
        return max(t.number for t in queued if t.user_attrs.get("retry_of") == first)

    def save_note(self, study_id: int, trial_id: int | None, body: str, seen: int) -> notes.Note:
        """Save the note of the study (trial_id None) or of a trial as version `seen` + 1, as
        optuna-dashboard does; NoteConflict when someone saved another version since `seen`."""
        storage = optuna_storage(self.url, heartbeat=False)
        attrs = storage.get_study_system_attrs(study_id)
        current = notes.read(attrs, trial_id)
        if current.version != seen:
            raise notes.NoteConflict(current)
        for key, value in notes.attrs_to_save(attrs, trial_id, seen + 1, body).items():
            storage.set_study_system_attr(study_id, key, value)
        return notes.Note(seen + 1, body)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
