"""Trials whose worker died (SIGKILL, the OOM killer, a lost machine) or was interrupted: failed
with a reason, and queued again with the same parameters, so the study still reaches n_trials.

Death is noticed two ways: on this host by the worker's pid (at once), on other hosts by the
trial's heartbeat (Optuna's `trial_heartbeats`) going stale past the grace period. We find stale
trials ourselves rather than through `optuna.storages.fail_stale_trials`: that one fails the trial
before its callback runs, when its fail reason can no longer be recorded.

A retry is an Optuna WAITING trial carrying the same params and Optuna's own `failed_trial` and
`retry_history` system attributes, so `RetryHeartbeatStaleTrialCallback.retry_history()` reads it;
the next `ask()` of any worker takes it. A trial that keeps killing its worker is retried
`budget.max_retries` times, then left failed.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import optuna

from engine.storage import HEARTBEAT_GRACE_S, Store, load_study
from engine.storage.states import EventKind
from engine.system import monitor

log = logging.getLogger("tui_hpo.recovery")
States = optuna.trial.TrialState
WORKER_DIED = "worker died"
INTERRUPTED = "interrupted"
HEARTBEAT_LOST = "heartbeat lost: its worker or machine went away"
UNLABELLED_S = 60.0  # a live worker labels its trial within milliseconds of asking for it


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retries: int, counts: bool = True) -> bool:
    """Queue `trial`'s params again; False when its retries are used up. An interruption (Ctrl-C,
    a stop) is not the trial's fault: with `counts=False` it does not use up a retry."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    retries = int(trial.user_attrs.get("retries", 0)) + (1 if counts else 0)
    if retries > max_retries:
        return False
    study.add_trial(optuna.create_trial(
        state=States.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": history[0], "retries": retries},
        system_attrs={"failed_trial": history[0], "retry_history": history}))
    return True


def fail_and_requeue(study: optuna.Study, store: Store, study_id: int, trial: optuna.trial.FrozenTrial, reason: str,
                     max_retries: int, already_failed: bool = False, counts: bool = True) -> bool:
    """Fail a trial whose worker is gone (unless someone else did first) and queue it again.
    Returns True when this call failed it (so its budget slot may be released)."""
    storage = study._storage
    if not already_failed:
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial._trial_id, States.FAIL):
                return False
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # another process recovered it, or the worker finished after all
    requeued = requeue(study, trial, max_retries, counts)
    then = "it runs again with the same params" if requeued else f"not retried: {max_retries} retry(ies) used"
    store.add_event(study_id, EventKind.TRIAL_INTERRUPTED, f"trial {trial.number}: {reason}; {then}", level="warning",
                    trial_number=trial.number)
    log.warning("trial %s: %s; %s", trial.number, reason, then)
    return True


def recover_dead_trials(url: str, study_name: str, store: Store, study_id: int, max_retries: int,
                        labels: set[str] | None = None, stopped: bool = False) -> int:
    """Fail and requeue RUNNING trials whose worker is gone: those of the workers named in
    `labels` (host:pid), or, without labels, any on this host whose pid is dead and any (on any
    host) whose heartbeat went stale. `stopped`: the user killed them (a second Ctrl-C), which
    uses up no retry. Returns how many were failed here."""
    recovered = 0
    study = load_study(url, study_name)
    host = monitor.hostname()
    stale = store.stale_trials(study_id, HEARTBEAT_GRACE_S) if labels is None else set()
    for trial in study.get_trials(deepcopy=False, states=(States.RUNNING,)):
        label = str(trial.user_attrs.get("worker", ""))
        worker_host, _, pid = label.rpartition(":")
        reason = INTERRUPTED if stopped else WORKER_DIED
        if labels is not None:
            dead = label in labels
        elif not label:  # killed between ask() and labelling the trial: no pid, no heartbeat
            dead = trial.datetime_start is not None and time.time() - trial.datetime_start.timestamp() > UNLABELLED_S
        elif worker_host == host and pid.isdigit():
            dead = not pid_alive(int(pid))
        else:  # another machine's worker: only its heartbeat can tell
            dead, reason = trial.number in stale, HEARTBEAT_LOST
        if not dead:
            continue
        if fail_and_requeue(study, store, study_id, trial, reason, max_retries, counts=not stopped):
            recovered += 1
        if worker_host == host:  # after the record: a Ctrl-C that comes once the program is gone loses nothing
            kill_program(trial)
    return recovered


def kill_program(trial: optuna.trial.FrozenTrial) -> None:
    """A program trial's process group, killed with its dead worker: Linux kills the program
    itself with its worker (engine.command.process), but not what the program started."""
    pgid = trial.user_attrs.get("pgid")
    if isinstance(pgid, int) and pgid > 1:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        log.warning("trial %s: killed what its program left running (process group %d)", trial.number, pgid)
