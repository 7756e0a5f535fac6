"""A persistent worker: loads what its trials need once (torch and the decoded images for the
built-in trainer; nothing for a program), then runs trials until the budget is spent or the
sweep is stopped. Everything it needs comes from the storage (the resolved config lives in
`hpo_sweep`), so `tui-hpo worker --storage URL --study NAME` joins a sweep from any machine.

Signals: the first SIGINT/SIGTERM stops the running trial (at its next batch; a program gets
SIGTERM): it ends FAIL with reason "interrupted" and its budget slot is given back, and the
worker exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import optuna

from engine.config.space import suggest
from engine.errors import DEVICE_EXIT, DISK_EXIT, DeviceProblem, Interrupted, TrialTimeout, disk_problem
from engine.storage import HEARTBEAT_INTERVAL_S, Store, load_study, optuna_storage
from engine.storage.states import EventKind, SweepState, WorkerState
from engine.sweep.recovery import INTERRUPTED, requeue
from engine.sweep.samplers import make_pruner, make_sampler
from engine.sweep.tracking import log_trial
from engine.sweep.worker_args import WorkerArgs
from engine.system.monitor import hostname

log = logging.getLogger("tui_hpo.worker")
CONTROL_POLL_S = 1.0
IDLE_POLL_S = 0.5
PARENT_POLL_S = 1.0


@dataclass
class StopFlag:
    """Set by a signal, or by the sweep's state in the database (checked at most once a second)."""

    store: Store
    study_id: int
    signalled: threading.Event = field(default_factory=threading.Event)
    _checked: float = 0.0
    _db_stop: bool = False

    def __call__(self) -> bool:
        if self.signalled.is_set():
            return True
        now = time.monotonic()
        if now - self._checked >= CONTROL_POLL_S:
            self._checked = now
            row = self.store.sweep_state(self.study_id)
            self._db_stop = row in (SweepState.STOPPING, SweepState.STOPPED)
        return self._db_stop


class Heartbeat:
    """Records the running trial's heartbeat every few seconds, as Optuna's optimize() does."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # a missed beat is survivable; the next one may succeed
                log.warning("heartbeat failed: %s", exc)
            if self._stop.wait(HEARTBEAT_INTERVAL_S):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Worker:
    """Runs trials until the sweep ends: asks Optuna for parameters, hands them to the sweep's
    objective (the built-in trainer, or a program: `ImageTrials`, `CommandTrials`) and tells
    Optuna how the trial ended. Everything else (the budget, pause and stop, retries, events)
    is the same for both."""

    def __init__(self, url: str, study_name: str, workdir: Path, device: str, index: int,
                 signalled: threading.Event, threads: int = 0) -> None:
        self.store = Store(url)
        row = self.store.sweep(study_name)
        if row is None:
            raise SystemExit(f"tui-hpo worker: no sweep named '{study_name}' in this storage")
        self.sweep = row
        self.config = row.sweep_config()
        self.storage = optuna_storage(url)
        self.study = load_study(url, study_name, storage=self.storage, sampler=make_sampler(self.config, index),
                                pruner=make_pruner(self.config))
        self.study_id = row.study_id
        self.device = device
        self.label = f"{hostname()}:{os.getpid()}"
        self.artifacts = workdir / study_name
        self.stop = StopFlag(self.store, self.study_id, signalled)
        if self.config.runs_command:  # a program's own framework uses the device: no torch here
            from engine.sweep.command_trials import CommandTrials

            self.objective: Any = CommandTrials(self)
        else:
            from engine.sweep.image_trials import ImageTrials

            self.objective = ImageTrials(self, threads)
        self.worker_id = self.store.register_worker(self.study_id, hostname(), os.getpid(), device)

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        self.store.add_event(self.study_id, EventKind.WORKER, f"worker {self.label} started on {self.device}")
        try:
            while not self.stop():
                state = self.store.sweep_state(self.study_id)
                if state == SweepState.PAUSED:
                    self.store.update_worker(self.worker_id, state=WorkerState.PAUSED)
                    time.sleep(IDLE_POLL_S)
                    continue
                if state != SweepState.RUNNING or self._past_deadline() or self._too_many_failures():
                    break
                if not self.store.claim(self.study_id):
                    if self.store.finished_count(self.study_id) >= self.store.n_trials(self.study_id):
                        break
                    self.store.update_worker(self.worker_id, state=WorkerState.WAITING)
                    time.sleep(IDLE_POLL_S)  # others are running; a failure may free a slot
                    continue
                self.run_one()
        finally:
            self.store.update_worker(self.worker_id, state=WorkerState.EXITED, trial_number=None)
            self.store.add_event(self.study_id, EventKind.WORKER, f"worker {self.label} exited")

    def _past_deadline(self) -> bool:
        row = self.store.sweep(self.sweep.study_name)
        return row is not None and row.deadline is not None and time.time() >= row.deadline

    def _too_many_failures(self) -> bool:
        limit = self.config.budget.max_consecutive_failures
        if self.store.recent_failures(self.study_id, limit) < limit:
            return False
        self.store.stop_sweep(self.study_id, SweepState.STOPPED)
        self.store.add_event(self.study_id, EventKind.SWEEP, f"stopped after {limit} consecutive failed trials: "
                             "see the trials' fail_reason", level="error")
        return True

    def run_one(self) -> None:
        trial = self.study.ask()
        number = trial.number
        started = time.perf_counter()
        limit = self.config.budget.trial_timeout
        deadline = time.monotonic() + limit if limit else None
        state, values, reason = optuna.trial.TrialState.FAIL, None, None
        with Heartbeat(self.storage, trial._trial_id):
            try:
                params = suggest(trial, self.config.search_space, self.config.fixed())

                def announce(params: dict[str, Any] = params) -> None:
                    """Said by the objective once the trial runs (a program's start waits for no write).
                    The worker's label is what finds the trial if this worker dies (`recovery`)."""
                    trial.set_user_attr("worker", self.label)
                    trial.set_user_attr("device", self.device)
                    self.store.update_worker(self.worker_id, state=WorkerState.RUNNING, trial_number=number)
                    self.event(EventKind.TRIAL, f"trial {number} started on {self.label}: {fmt_params(params)}",
                               number)

                values = self.objective.run(trial, params, deadline, announce)
                state = optuna.trial.TrialState.COMPLETE
            except optuna.TrialPruned as exc:
                state, reason = optuna.trial.TrialState.PRUNED, str(exc) or "pruned"
            except Interrupted:
                reason = INTERRUPTED
            except TrialTimeout as exc:
                reason = str(exc)
            except Exception as exc:  # the trial fails with its reason; the sweep goes on
                reason = f"{exc.__class__.__name__}: {exc}"
                log.exception("trial %s failed", number)
        seconds = time.perf_counter() - started
        if self.storage.get_trial(trial._trial_id).state.is_finished():
            # Failed from the TUI while it ran (`r`: fail and retry), which queued its rerun: the
            # trial is final, so nothing more is written to it.
            log.warning("trial %s was ended from outside while it ran; its rerun is queued", number)
            self.objective.after(trial, optuna.trial.TrialState.FAIL, None, False)
            self.store.update_worker(self.worker_id, state=WorkerState.IDLE, trial_number=None)
            return
        trial.set_user_attr("duration_s", round(seconds, 3))
        if reason and state == optuna.trial.TrialState.FAIL:
            trial.set_user_attr("fail_reason", reason[:2000])
        self.study.tell(trial, values if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        if state == optuna.trial.TrialState.FAIL:
            self.store.release(self.study_id)
        if reason == INTERRUPTED:  # not the trial's fault: the same params run again on resume
            requeue(self.study, self.storage.get_trial(trial._trial_id), self.config.budget.max_retries, counts=False)
        self._report(number, state, values, reason, seconds)
        log_trial(self, trial)
        self.objective.after(trial, state, values, reason == INTERRUPTED)
        self.store.update_worker(self.worker_id, state=WorkerState.IDLE, trial_number=None)

    def event(self, kind: str, message: str, number: int, level: str = "info") -> None:
        """An event in the database (what viewers show) and a line in this worker's log."""
        self.store.add_event(self.study_id, kind, message, level=level, trial_number=number)
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)

    def _report(self, number: int, state: optuna.trial.TrialState, values: list[float] | None,
                reason: str | None, seconds: float) -> None:
        report_end(self.event, self.config.objective.metrics(), number, state, values, reason, seconds)


def report_end(event: Callable[..., None], names: list[str], number: int, state: optuna.trial.TrialState,
               values: list[float] | None, reason: str | None, seconds: float) -> None:
    """How a trial ended, as one event line: the same words whichever tier ran it."""
    if state == optuna.trial.TrialState.COMPLETE and values is not None:
        shown = ", ".join(f"{n}={v:.4f}" for n, v in zip(names, values, strict=True))
        event(EventKind.TRIAL_COMPLETE, f"trial {number} complete: {shown} in {seconds:.1f}s", number)
    elif state == optuna.trial.TrialState.PRUNED:
        event(EventKind.TRIAL_PRUNED, f"trial {number} {reason} after {seconds:.1f}s", number)
    elif reason == INTERRUPTED:
        event(EventKind.TRIAL_INTERRUPTED, f"trial {number} interrupted after {seconds:.1f}s: it will run "
              "again on resume", number)
    else:
        first, *more = (reason or "").splitlines() or [""]
        shown = f"{first} (see the trial's fail_reason)" if more else first  # an event is one line
        event(EventKind.TRIAL_FAILED, f"trial {number} failed: {shown}", number, level="warning")


def _watch_parent(parent: int, signalled: threading.Event) -> None:
    """An engine killed with SIGKILL cannot stop its workers: each notices it is orphaned and
    stops as on Ctrl-C (its trial is failed and queued again), instead of running on unseen."""
    while not signalled.is_set():
        if os.getppid() != parent:
            log.warning("the engine (pid %d) is gone: stopping", parent)
            signalled.set()
            return
        time.sleep(PARENT_POLL_S)


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def out_of_memory_note(number: int, batch: int, smaller: dict[str, int]) -> str:
    """The event of a trial that ran out of memory at `batch` and goes on at `smaller` (an entry
    of its `oom_retries` attribute: batch_size, accum_steps), in either tier."""
    return (f"trial {number}: out of memory at batch {batch}; again with batch {smaller['batch_size']} x "
            f"{smaller['accum_steps']} accumulation steps (same effective batch)")


def run_worker(args: WorkerArgs) -> int:
    """Run trials until the sweep ends; the exit code (DISK_EXIT when the disk is full,
    DEVICE_EXIT when torch cannot use the device it was given)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{args.index} %(levelname)s %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # We run the heartbeat ourselves (class Heartbeat): ask/tell with heartbeats is intended here.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    # torch.compile's kernels, kept in the workspace: every worker, and later sweeps, reuse them
    # instead of compiling again (a variable the user set wins).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(args.workdir / ".cache" / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(args.workdir / ".cache" / "triton"))
    signalled = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: signalled.set())
    if args.parent:  # given, not read with getppid(): the engine may have died while this one started
        threading.Thread(target=_watch_parent, args=(args.parent, signalled), daemon=True).start()
    try:
        Worker(args.url, args.study, args.workdir, args.device, args.index, signalled, args.threads).run()
    except DeviceProblem as exc:  # the engine planned GPUs from NVML; torch has the last word
        log.error("%s", exc)
        return DEVICE_EXIT
    except Exception as exc:
        problem = disk_problem(exc)
        if problem is None:
            raise
        log.error("stopping: cannot write (%s)", problem)  # the engine stops the sweep with one clear line
        return DISK_EXIT
    return 0


def exit_now(code: int) -> NoReturn:
    """End the worker without the interpreter's teardown, which takes over a second once torch
    and timm are loaded, and which the sweep would wait for: every result is committed by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(run_worker(WorkerArgs.parse()))
