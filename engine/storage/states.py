"""Sweep states and event kinds as our tables store them, and the progress arithmetic every reader
shares (what counts as done, the ETA). The enums are `str`: a value read from the database
compares equal to its member, and a member writes its value."""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    def __str__(self) -> str:
        return self.value


class SweepState(_Word):
    """`hpo_sweep.state`: workers take new trials only while RUNNING."""

    RUNNING = "running"
    PAUSED = "paused"  # running trials finish; no new one starts
    STOPPING = "stopping"  # workers stop at their next batch
    STOPPED = "stopped"  # by the user, a time budget, or consecutive failures
    FINISHED = "finished"  # the budget is spent
    EXTERNAL = "external"  # not ours: a study plain Optuna made (never stored, only shown)
    # Running or paused in the database with no worker seen lately: the engine was killed (kill -9,
    # a lost machine). Never stored, only shown; `run --resume` goes on.
    INTERRUPTED = "interrupted"


ACTIVE = (SweepState.RUNNING, SweepState.PAUSED)  # a sweep that still has an engine and workers
WORKER_LIVE_S = 120.0  # a worker seen this recently (it writes every few seconds) is alive


class WorkerState(_Word):
    """`hpo_worker.state`."""

    IDLE = "idle"
    RUNNING = "running"  # training a trial
    PAUSED = "paused"
    WAITING = "waiting"  # the budget is claimed by running trials; one may fail and free a slot
    EXITED = "exited"


class EventKind(_Word):
    """`hpo_event.kind`: what a line of the event log is about."""

    SWEEP = "sweep"
    WORKER = "worker"
    DATA = "data"
    COMMAND = "command"
    CHECKPOINT = "checkpoint"
    TRIAL = "trial"  # started
    TRIAL_COMPLETE = "trial_complete"
    TRIAL_PRUNED = "trial_pruned"
    TRIAL_FAILED = "trial_failed"
    TRIAL_INTERRUPTED = "trial_interrupted"  # its worker died or was stopped: it runs again
    TRIAL_OOM = "trial_oom"  # out of memory: it goes on with a smaller batch
    COMPILE = "compile"  # resources.compile: auto decided for a model and shape


OUTCOMES = (EventKind.TRIAL_COMPLETE, EventKind.TRIAL_PRUNED, EventKind.TRIAL_FAILED)

# Optuna's trial states that use up a slot of the budget once reached.
FINISHED_TRIALS = ("COMPLETE", "PRUNED")


def finished_count(counts: dict[str, int]) -> int:
    """Trials done, from counts by Optuna state: complete and pruned ones (failed ones run again)."""
    return sum(counts.get(state, 0) for state in FINISHED_TRIALS)


RECENT_DURATIONS = 50  # the ETA averages this many of the latest finished trials


def eta_seconds(durations: list[float], n_trials: int, done: int, running: int) -> float | None:
    """Time left: the mean of recent finished trials' durations, times the trials left, over the
    trials running at once. None before the first finished trial, or when the budget is spent."""
    remaining = n_trials - done
    if not durations or remaining <= 0:
        return None
    return sum(durations) / len(durations) * remaining / max(1, running)
