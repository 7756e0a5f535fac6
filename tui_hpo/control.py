"""Steering a sweep from the TUI. Every command is a write to the database, which the engine and
its workers poll, so a command reaches workers on other machines exactly as it reaches local ones.
"""

from __future__ import annotations

from engine.storage import Store
from engine.storage.states import EventKind, SweepState


class Control:
    """The one writer the TUI has: a handful of small, separate transactions."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)

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

    def close(self) -> None:
        self.store.close()
