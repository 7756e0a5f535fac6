"""What Tune does, written into the sweep's study as the Optuna tier writes it, so the dashboard,
trial detail, `summary`, `export` and the rest read a Ray sweep unchanged: each epoch's metrics
and intermediate value, the Ray worker a trial runs on, PBT's clones and mutations, and how each
trial ended (complete, pruned by the scheduler or the user, failed, or interrupted by a stop and
queued again). All of it is written here, in the driver: Ray's workers need no database.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback, Stopper

from engine.config.space import train_key
from engine.storage.states import EventKind, SweepState, WorkerState
from engine.sweep import checkpoints
from engine.sweep.recovery import INTERRUPTED, requeue
from engine.sweep.worker import fmt_params, out_of_memory_note, report_end
from engine.tune.files import package_file
from engine.tune.searcher import Round, StudyLink

log = logging.getLogger("tui_hpo.tune")
States = optuna.trial.TrialState
STOPPING = (SweepState.STOPPING, SweepState.STOPPED)
# Ray's error for a restored trial whose checkpoint Tune had already replaced (and deleted) when
# the engine was killed: its experiment state was saved before the newer checkpoints.
CHECKPOINT_GONE = "does not exist on storage anymore"
STATE_READ_S = 1.0  # how often the stopper reads the sweep's state: Tune asks on every loop step


class Recorder(Callback):
    """Tune's callback that keeps the study up to date."""

    def __init__(self, link: StudyLink, round_: Round, metric: str, classes: list[str], folder: Path) -> None:
        self.link, self.round, self.metric, self.classes, self.folder = link, round_, metric, classes, folder
        self.started: dict[str, float] = {}
        self.seen: dict[str, dict[str, Any]] = {}  # per Ray trial: the config last recorded
        self.workers: dict[str, int] = {}  # "host:pid" -> its row in hpo_worker

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.round.live = sum(not t.is_finished() for t in trials)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        ids = self.link.optuna_trial(trial.trial_id, self.round)
        if ids is None:
            return
        self.started.setdefault(trial.trial_id, time.time())
        self.seen.setdefault(trial.trial_id, dict(trial.config))
        self._event(EventKind.TRIAL, f"trial {ids[1]} started as Ray trial {trial.trial_id}: "
                    f"{fmt_params(trial.config)}", ids[1])

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        ids = self.link.optuna_trial(trial.trial_id, self.round)
        if ids is None:
            return
        try:
            self._record(trial, ids, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Failed from the TUI (`r`, which queued its rerun) while it trained: the stopper ends it.
            self.round.dropped.add(trial.trial_id)

    def _record(self, trial: Any, ids: tuple[int, int], result: dict[str, Any]) -> None:
        trial_id, number = ids
        storage, store, sid = self.link.study._storage, self.link.store, self.link.study_id
        label = f"{result.get('hostname', '?')}:{result.get('pid', '?')}"
        if result.get("training_iteration") == 1 or trial.trial_id not in self.started:
            self.started.setdefault(trial.trial_id, time.time())
            storage.set_trial_user_attr(trial_id, "worker", label)
            storage.set_trial_user_attr(trial_id, "device", result.get("device", "cpu"))
            self._worker(label, WorkerState.RUNNING, number)
        if result.get("adopted"):
            self._lineage(trial, trial_id, number, result)
        if result.get("resumed_from"):
            storage.set_trial_user_attr(trial_id, "resumed_from_epoch", int(result["resumed_from"]))
            self._event(EventKind.TRIAL, f"trial {number}: went on from epoch {int(result['resumed_from']) + 1}, "
                        "its last checkpoint", number)
        for step in result.get("oom") or []:  # it ran out of memory, and went on at a smaller batch
            smaller = {"batch_size": int(step["batch_size"]), "accum_steps": int(step["accum_steps"])}
            before = storage.get_trial(trial_id).user_attrs.get("oom_retries", [])
            storage.set_trial_user_attr(trial_id, "oom_retries", [*before, smaller])
            self._event(EventKind.TRIAL_OOM, out_of_memory_note(number, int(step["from"]), smaller), number,
                        level="warning")
        for key, value in (result.get("attrs") or {}).items():  # a program's log, command line, exit code
            storage.set_trial_user_attr(trial_id, key, value)
        epoch = int(result["epoch"])
        # A program's steps come as `rows` (each with whatever it names its metrics, the ones that
        # changed since its last report); the built-in trainer's epoch has its known metrics.
        rows = result.get("rows")
        if rows is None:
            rows = {epoch: {k: float(result[k]) for k in ("train_loss", "val_loss", "val_accuracy", "val_f1", "lr",
                                                          "samples_per_s", "peak_mem_mb", "seconds") if k in result}}
        for step, metrics in rows.items():
            if metrics:
                store.set_epoch(sid, trial_id, 0, int(step), metrics)
        value = result.get(self.metric)
        if value is not None:
            storage.set_trial_intermediate_value(trial_id, epoch, float(value))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, _error_of(trial))

    # ------------------------------------------------------------ helpers

    def _event(self, kind: str, message: str, number: int, level: str = "info") -> None:
        self.link.store.add_event(self.link.study_id, kind, message, level=level, trial_number=number)
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)

    def _worker(self, label: str, state: str, number: int | None) -> None:
        """A Ray worker process as a row of the workers table, as the Optuna tier's workers are."""
        store, sid = self.link.store, self.link.study_id
        if label not in self.workers:
            host, _, pid = label.rpartition(":")
            self.workers[label] = store.register_worker(sid, host, int(pid) if pid.isdigit() else 0, "ray")
        store.update_worker(self.workers[label], state=state, trial_number=number)

    def _lineage(self, trial: Any, trial_id: int, number: int, result: dict[str, Any]) -> None:
        """A PBT exploit: the trial went on from another trial's checkpoint with mutated values.
        Recorded as `pbt` (a list: epoch, cloned trial, mutations) and in the trial's params, which
        then hold the values it trained with last."""
        source = self.link.optuna_trial(str(result["adopted"]), self.round)
        before = self.seen.get(trial.trial_id, {})
        mutated = {k: [before.get(k), v] for k, v in trial.config.items() if before.get(k) != v}
        storage = self.link.study._storage
        frozen = storage.get_trial(trial_id)
        # `epoch`: how many epochs the clone had trained (the first this trial trains anew is that one)
        step = {"epoch": int(result["epoch"]), "cloned": source[1] if source else None, "mutated": mutated}
        storage.set_trial_user_attr(trial_id, "pbt", [*frozen.user_attrs.get("pbt", []), step])
        for name, distribution in frozen.distributions.items():
            key = train_key(name)
            if key in mutated and mutated[key][1] is not None:
                value = mutated[key][1]
                if distribution._contains(distribution.to_internal_repr(value)):  # else the attribute alone has it
                    self.link.store.set_param(trial_id, name, distribution.to_internal_repr(value))
        self.seen[trial.trial_id] = dict(trial.config)
        shown = ", ".join(f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in mutated.items()) or "no change"
        cloned = f"trial {source[1]}" if source else f"Ray trial {result['adopted']}"
        self._event(EventKind.TRIAL, f"trial {number}: PBT cloned {cloned} after epoch {step['epoch']} "
                    f"and mutated {shown}", number)

    def _end(self, trial: Any, error: str | None) -> None:
        ids = self.link.optuna_trial(trial.trial_id, self.round)
        if ids is None:
            return
        trial_id, number = ids
        link, storage, store, sid = self.link, self.link.study._storage, self.link.store, self.link.study_id
        if storage.get_trial(trial_id).state.is_finished():
            return  # failed from the TUI (`r`), which queued its rerun
        last = trial.last_result or {}
        seconds = time.time() - self.started.get(trial.trial_id, time.time())
        storage.set_trial_user_attr(trial_id, "duration_s", round(seconds, 3))
        if "epoch" in last:
            storage.set_trial_user_attr(trial_id, "epochs", int(last["epoch"]) + 1)
        if "peak_mem_mb" in last:
            storage.set_trial_user_attr(trial_id, "peak_mem_mb", round(float(last["peak_mem_mb"]), 1))
        if last.get("class_f1"):
            storage.set_trial_user_attr(trial_id, "class_f1", {
                name: None if value != value else round(float(value), 4)  # NaN: the class was absent
                for name, value in zip(self.classes, last["class_f1"], strict=False)})
        values: list[float] | None = None
        interrupted = False
        if error is not None and CHECKPOINT_GONE in error:  # not the trial's fault: it runs again
            state, reason, interrupted = States.FAIL, f"{INTERRUPTED}: its checkpoint was gone after the restore", True
        elif error is not None or last.get("failed"):
            state, reason = States.FAIL, error or str(last["failed"])
        elif last.get("final"):
            state, reason, values = States.COMPLETE, None, [float(last["objective"])]
        elif self._at_max_t(last):
            # A program's trial that made its scheduler's max_t reports: the scheduler ends it there
            # as a finished trial, before the program's own end (the built-in trainer's last epoch
            # is `final` in its report), so its value is the last it reported.
            state, reason, values = States.COMPLETE, None, [float(last[self.metric])]
        elif store.sweep_state(sid) in STOPPING:
            state, reason, interrupted = States.FAIL, INTERRUPTED, True
        elif trial.trial_id in self.round.pruned_by_user:
            state, reason = States.PRUNED, f"pruned by the user in epoch {int(last.get('epoch', 0)) + 1}"
        else:
            epoch = int(last.get("epoch", 0)) + 1
            shown = f" ({self.metric}={last[self.metric]:.4f})" if self.metric in last else ""
            scheduler = link.config.scheduler.name if link.config.scheduler else "asha"
            state, reason = States.PRUNED, f"stopped by the {scheduler} scheduler in epoch {epoch}{shown}"
        if reason and state == States.FAIL:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason[:2000])
        link.study.tell(number, values, state=state)
        if state == States.FAIL:
            store.release(sid)
        if interrupted:
            requeue(link.study, storage.get_trial(trial_id), link.config.budget.max_retries, counts=False)
        self._keep_package(number, values)
        report_end(self._event, link.config.objective.metrics(), number, state, values, reason, seconds)
        label = str(storage.get_trial(trial_id).user_attrs.get("worker", ""))
        if label in self.workers:
            self._worker(label, WorkerState.IDLE, None)
        if state == States.FAIL and not interrupted:
            self._stop_after_failures()

    def _at_max_t(self, last: dict[str, Any]) -> bool:
        scheduler = self.link.config.scheduler
        max_t = getattr(scheduler, "max_t", None)
        return max_t is not None and int(last.get("training_iteration", 0)) >= max_t and self.metric in last

    def _keep_package(self, number: int, values: list[float] | None) -> None:
        """A finished trial's model (its trainable left the package) kept among the study's best
        `checkpoints.keep`, as the Optuna tier keeps its workers'; any other is dropped."""
        package = package_file(self.folder, number)
        if not package.is_file():
            return
        keep, link = self.link.config.checkpoints, self.link
        try:
            if values is not None:
                checkpoints.save(self.folder, number, lambda: [package.read_bytes()],
                                 lambda numbers: link.store.values_of(link.study_id, numbers),
                                 link.config.objective.directions()[0] == "maximize", keep.keep, keep.budget_mb)
        except OSError as exc:  # the trial's result is in the database already: only its weights are lost
            self._event(EventKind.CHECKPOINT, f"trial {number}: checkpoint not saved ({exc.strerror or exc})", number,
                        level="warning")
        package.unlink(missing_ok=True)

    def _stop_after_failures(self) -> None:
        limit = self.link.config.budget.max_consecutive_failures
        store, sid = self.link.store, self.link.study_id
        if store.recent_failures(sid, limit) >= limit:
            store.stop_sweep(sid, SweepState.STOPPED)
            store.add_event(sid, EventKind.SWEEP, f"stopped after {limit} consecutive failed trials: see the trials' "
                            "fail_reason", level="error")


class SweepStopper(Stopper):
    """Stops what the sweep's controls say: one trial the user pruned (`x` in the TUI), or every
    trial when the sweep is stopped (Ctrl-C, `tui-hpo stop`, the TUI). And a trial at its last
    epoch, before the scheduler hears of it: PBT would otherwise perturb a finished trial at its
    last report, and Tune start it again from a checkpoint, with nothing left to train."""

    def __init__(self, link: StudyLink, round_: Round) -> None:
        self.link, self.round = link, round_
        self._read_at, self._stop = 0.0, False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if trial_id in self.round.dropped or result.get("final"):
            return True
        ids = self.link.optuna_trial(trial_id, self.round)
        if ids is not None and self.link.store.take_command(self.link.study_id, "prune", ids[1]):
            self.round.pruned_by_user.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        if time.monotonic() - self._read_at >= STATE_READ_S:
            self._read_at = time.monotonic()
            self._stop = self.link.store.sweep_state(self.link.study_id) in STOPPING
        return self._stop

    def __getstate__(self) -> dict[str, Any]:
        return {"link": self.link, "round": self.round}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["link"], state["round"])  # type: ignore[misc]


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _error_of(trial: Any) -> str:
    """The last line of the trial's error as Tune recorded it (the traceback is in its file)."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return f"{lines[-1].strip()} (Ray's traceback: {path})"
    return "the Ray trial failed"
