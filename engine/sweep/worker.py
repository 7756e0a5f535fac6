"""A persistent worker: imports torch and decodes the data once, then runs trials until the
budget is spent or the sweep is stopped. Everything it needs comes from the storage (the
resolved config lives in `hpo_sweep`), so `tui-hpo worker --storage URL --study NAME` joins a
sweep from any machine.

Signals: the first SIGINT/SIGTERM stops the running trial at its next batch (it ends FAIL with
reason "interrupted" and its budget slot is given back); the worker then exits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import optuna

from engine.config import SweepConfig
from engine.config.space import suggest, train_params
from engine.datasets.scan import parts_of, scan, splits
from engine.errors import DEVICE_EXIT, DISK_EXIT, disk_problem
from engine.insights.gpu import gpu_usage
from engine.storage import HEARTBEAT_INTERVAL_S, Store, load_study, optuna_storage
from engine.storage.states import EventKind, SweepState, WorkerState
from engine.sweep import checkpoints, compile_policy
from engine.sweep.recovery import INTERRUPTED, requeue
from engine.sweep.samplers import make_pruner, make_sampler
from engine.sweep.worker_args import WorkerArgs
from engine.system import benchmarks
from engine.system.monitor import hostname
from engine.training import resume as resume_state
from engine.training.devices import cuda_problem, device_name, set_threads
from engine.training.fit import EarlyStop, EpochMetrics, Interrupted, Runtime, fit_within_memory
from engine.training.package import package_bytes, package_meta  # imports torch and timm once, not in a trial's timing
from engine.training.tensors import ImageData, load

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


def trial_train_config(config: SweepConfig, params: dict[str, Any]) -> Any:
    return config.train.model_copy(update=params)


def objective_value(config: SweepConfig, per_fold: list[EpochMetrics], seconds: float) -> list[float]:
    """The objective metric(s) of a finished trial: the last epoch's value, averaged over folds."""
    values = []
    for metric in config.objective.metrics():
        if metric == "train_time":
            values.append(seconds)
        else:
            values.append(sum(getattr(m, metric) for m in per_fold) / len(per_fold))
    return values


class Worker:
    def __init__(self, url: str, study_name: str, workdir: Path, device: str, index: int,
                 signalled: threading.Event) -> None:
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
        self.runtime = Runtime.from_resources(self.config.resources, device)
        self.device_name = device_name(device)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # the engine gives each GPU worker one GPU
        self.gpu_index = int(visible) if device.startswith("cuda") and visible.isdigit() else None
        self.compile_said: set[str] = set()  # compile decisions already reported by this worker
        self.torch_version = metadata.version("torch")  # part of every shape key; a lookup costs milliseconds
        # `tui-hpo gpu benchmark`'s figures for this device, if it ran here: compile's prior cost and gain
        self.benchmark = benchmarks.load(benchmarks.device_key(device, self.device_name))
        self.label = f"{hostname()}:{os.getpid()}"
        self.artifacts = workdir / study_name
        self.stop = StopFlag(self.store, self.study_id, signalled)
        self.worker_id = self.store.register_worker(self.study_id, hostname(), os.getpid(), device)
        self.data = self._load_data()

    def _load_data(self) -> ImageData:
        cfg = self.config.data
        found = scan(cfg)
        sizes = [self.config.train.image_size]
        spec = self.config.search_space.get("image_size")
        if spec is not None:
            sizes += [int(c) for c in spec.choices or []] + [int(spec.high or 0)]
        # Decoded once into the workspace: every other worker, and later sweeps on the same files, read it.
        self.decode_size = max(sizes)  # every image size is resized from this decoding (a package records it)
        data = load(found, cfg, self.decode_size, cache_dir=self.artifacts.parent / ".cache" / "images")
        if data.skipped:
            shown = "; ".join(f"{p} ({why})" for p, why in data.skipped[:5])
            self.store.add_event(self.study_id, EventKind.DATA, f"{self.label}: skipped {len(data.skipped)} "
                                 f"unreadable image(s): {shown}", level="warning")
        self.splits = splits(data.labels.numpy(), cfg, parts_of(data.scan))
        # Resize and normalisation statistics for the default image size are computed now, once,
        # rather than inside the first trial (sizes that only the search space names come lazily).
        for train_idx, _val in self.splits:
            data.mean_std(self.config.train.image_size, train_idx)
        return data

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
        number, lineage = trial.number, _lineage(trial)
        trial.set_user_attr("worker", self.label)
        trial.set_user_attr("device", self.device)
        self.store.update_worker(self.worker_id, state=WorkerState.RUNNING, trial_number=number)
        started, since = time.perf_counter(), time.time()
        state, values, reason = optuna.trial.TrialState.FAIL, None, None
        models: list[Any] = []
        with Heartbeat(self.storage, trial._trial_id):
            try:
                params = suggest(trial, self.config.search_space, self.config.train.model_dump())
                self._event(EventKind.TRIAL, f"trial {number} started on {self.label}: {_fmt_params(params)}", number)
                models, per_fold = self._train(trial, params)
                self._record_device_use(trial, per_fold, since)
                values = objective_value(self.config, per_fold, time.perf_counter() - started)
                state = optuna.trial.TrialState.COMPLETE
            except optuna.TrialPruned as exc:
                state, reason = optuna.trial.TrialState.PRUNED, str(exc) or "pruned"
            except Interrupted:
                reason = INTERRUPTED
            except Exception as exc:  # the trial fails with its reason; the sweep goes on
                reason = f"{exc.__class__.__name__}: {exc}"
                log.exception("trial %s failed", number)
        seconds = time.perf_counter() - started
        trial.set_user_attr("duration_s", round(seconds, 3))
        if reason and state == optuna.trial.TrialState.FAIL:
            trial.set_user_attr("fail_reason", reason[:2000])
        self.study.tell(trial, values if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        if state == optuna.trial.TrialState.FAIL:
            self.store.release(self.study_id)
        if reason != INTERRUPTED:  # finished, or failed for good: its rerun state is of no more use
            resume_state.remove(self.artifacts, lineage)
        if reason == INTERRUPTED:  # not the trial's fault: the same params run again on resume
            requeue(self.study, self.storage.get_trial(trial._trial_id), self.config.budget.max_retries, counts=False)
        self._report(number, state, values, reason, seconds)
        if state == optuna.trial.TrialState.COMPLETE and models and values:  # several objectives: ranked by the first
            self._maybe_checkpoint(number, values[0], models, train_params(trial.params), per_fold)
        self.store.update_worker(self.worker_id, state=WorkerState.IDLE, trial_number=None)

    def _train(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[list[Any], list[EpochMetrics]]:
        """(each fold's trained model, each fold's final metrics). A finished fold's model waits on
        the CPU, out of the next fold's GPU memory, until the trial's checkpoint is decided."""
        cfg = trial_train_config(self.config, params)
        metric = self.config.objective.metrics()[0]
        single = len(self.config.objective.metrics()) == 1 and metric != "train_time"
        folds = len(self.splits)
        finals: list[EpochMetrics] = []
        models: list[Any] = []
        asked = cfg
        cfg = self._fitted_before(trial, cfg)
        runtime, speeds = self._compile_choice(trial, cfg)
        stopping = self.config.train.early_stopping
        early_stop = None if stopping is None else EarlyStop(
            metric if metric != "train_time" else "val_loss",
            self.config.objective.directions()[0] == "maximize" if metric != "train_time" else False,
            stopping.patience, stopping.min_delta)
        ran = 0
        every, minutes = self.config.checkpoints.every, self.config.checkpoints.every_minutes
        reported: set[int] = set()
        for fold, split in enumerate(self.splits):
            def on_epoch(m: EpochMetrics, fold: int = fold) -> None:
                self.store.add_epoch(self.study_id, trial._trial_id, fold, m.to_dict() | {"epoch": m.epoch})
                if self.store.take_command(self.study_id, "prune", trial.number):
                    raise optuna.TrialPruned(f"pruned by the user in epoch {m.epoch + 1}")
                if single and folds == 1:
                    if m.epoch not in reported:  # a rerun at half the batch (out of memory) repeats epochs
                        trial.report(getattr(m, metric), m.epoch)
                        reported.add(m.epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned in epoch {m.epoch + 1} ({metric}={getattr(m, metric):.4f})")

            # Saved under the first trial of its chain of reruns, where a rerun of this one looks
            resume = resume_state.ResumeFile(resume_state.path_of(self.artifacts, _lineage(trial), fold, folds),
                                             every, minutes * 60 if minutes else None) if every or minutes else None
            if models:  # the finished fold's model waits on the CPU; with no checkpoint kept, it goes
                models[-1] = models[-1].to("cpu") if self.config.checkpoints.keep else None
            model, history, cfg = fit_within_memory(
                cfg, self.data, split, runtime, on_epoch, self.stop,
                lambda old, new, fold=fold: self._step_down(trial, fold, old, new), early_stop, resume)
            if resume is not None and resume.resumed_from is not None:
                trial.set_user_attr("resumed_from_epoch", resume.resumed_from)
                self._event(EventKind.TRIAL, f"trial {trial.number}: went on from epoch {resume.resumed_from + 1}"
                            + (f" of fold {fold + 1}" if folds > 1 else "")
                            + f", saved by trial {_lineage(trial)}'s run", trial.number)
            final = history[-1]
            if early_stop is not None:  # the run keeps its best epoch's weights: its value is that epoch's
                final = history[early_stop.best_epoch(history)]
                if len(history) < cfg.epochs:
                    trial.set_user_attr("stopped_early", {"fold": fold, "after_epoch": len(history),
                                                          "best_epoch": final.epoch + 1})
            finals.append(final)
            ran += len(history)
            if cfg.batch_size < asked.batch_size:  # later trials of this shape start where this one fitted
                self.store.record_shape(self._shape_key(asked), fitted_batch=cfg.batch_size)
            speeds = self._record_speeds(cfg, runtime, history, len(split[0]), speeds)
            if single and folds > 1:
                trial.report(getattr(history[-1], metric), fold)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {fold + 1}")
            models.append(model)
        trial.set_user_attr("epochs", ran)
        trial.set_user_attr("class_f1", self._class_f1(finals))
        return models, finals

    def _class_f1(self, finals: list[EpochMetrics]) -> dict[str, float | None]:
        """Validation F1 per class name, averaged over folds (None where a class was absent)."""
        names = self.data.scan.classes
        per_fold = np.array([m.class_f1 for m in finals], dtype=float)
        mean = np.nanmean(per_fold, axis=0) if per_fold.size else np.full(len(names), np.nan)
        return {name: None if np.isnan(v) else round(float(v), 4) for name, v in zip(names, mean, strict=True)}

    def _record_device_use(self, trial: optuna.Trial, finals: list[EpochMetrics], since: float) -> None:
        """The trial's peak memory and, on a GPU, which one and how busy it was meanwhile (the
        engine's samples of that GPU): what packing trials onto GPUs is judged by."""
        trial.set_user_attr("peak_mem_mb", round(max(m.peak_mem_mb for m in finals), 1))
        if self.gpu_index is None:
            return
        trial.set_user_attr("gpu", f"{self.device_name} (GPU {self.gpu_index})")
        usage = gpu_usage(self.store.samples_between(since, time.time(), hostname()), [self.gpu_index])
        if usage and usage["busy_percent"] is not None:
            trial.set_user_attr("gpu_util", usage["busy_percent"])

    def _shape_key(self, cfg: Any) -> str:
        return compile_policy.shape_key(self.device_name, cfg.model, cfg.image_size, cfg.batch_size, self.runtime.amp,
                                        self.runtime.channels_last, self.torch_version)

    def _fitted_before(self, trial: optuna.Trial, cfg: Any) -> Any:
        """`cfg`, or, when its batch ran out of memory on this device before, the smaller batch
        that fitted then, with the gradient accumulation that keeps the effective batch: the same
        experiment without going through the same out-of-memory errors again."""
        fitted = self.store.shape(self._shape_key(cfg)).get("fitted_batch")
        if not fitted or fitted >= cfg.batch_size:
            return cfg
        factor = max(1, cfg.batch_size // int(fitted))
        smaller = cfg.model_copy(update={"batch_size": int(fitted), "accum_steps": cfg.accum_steps * factor})
        self._event(EventKind.TRIAL_OOM, f"trial {trial.number}: starts at batch {smaller.batch_size} x "
                    f"{smaller.accum_steps} accumulation steps: batch {cfg.batch_size} ran out of memory here "
                    "before (same effective batch)", trial.number)
        return smaller

    def _compile_choice(self, trial: optuna.Trial, cfg: Any) -> tuple[Runtime, compile_policy.Speeds]:
        """This trial's runtime, compiled or not (`resources.compile`), and what was measured for
        its model and shape so far. Each decision is an event, once per worker and shape."""
        speeds = compile_policy.Speeds.of(self.store.shape(self._shape_key(cfg)))
        steps = sum(cfg.epochs * math.ceil(len(train) / cfg.batch_size) for train, _val in self.splits)
        what = f"{cfg.model} at {cfg.image_size} px, batch {cfg.batch_size}"
        prior = compile_policy.prior_from(self.benchmark, cfg.model, self.torch_version)
        decision = compile_policy.decide(self.config.resources.compile, speeds, steps, what, prior)
        trial.set_user_attr("compiled", decision.compile)
        said = f"{what}|{decision.compile}|{speeds.eager_step_s is None}|{speeds.compile_s is None}"  # news only
        if self.config.resources.compile == "auto" and said not in self.compile_said:
            self.compile_said.add(said)
            self._event(EventKind.COMPILE, f"trial {trial.number}: {decision.reason}", trial.number)
        return dataclasses.replace(self.runtime, compile=decision.compile), speeds

    def _record_speeds(self, cfg: Any, runtime: Runtime, history: list[EpochMetrics], n_train: int,
                       known: compile_policy.Speeds) -> compile_policy.Speeds:
        """Keep what this fold measured (a step, eager or compiled, and the compile cost) for
        later trials and sweeps; returns the speeds known now."""
        measured = compile_policy.measure(history, cfg.batch_size, math.ceil(n_train / cfg.batch_size),
                                          runtime.compile, known)
        if not measured:
            return known
        self.store.record_shape(self._shape_key(cfg), **measured)
        return dataclasses.replace(known, **measured)

    def _step_down(self, trial: optuna.Trial, fold: int, cfg: Any, smaller: Any) -> None:
        """Out of memory at `cfg`'s batch: recorded on the trial, and the epochs the failed attempt
        wrote for this fold are cleared, since the smaller batch starts the fold again."""
        self.store.clear_epochs(trial._trial_id, fold)
        steps = [*trial.user_attrs.get("oom_retries", []),
                 {"batch_size": smaller.batch_size, "accum_steps": smaller.accum_steps}]
        trial.set_user_attr("oom_retries", steps)
        self._event(EventKind.TRIAL_OOM, f"trial {trial.number}: out of memory at batch {cfg.batch_size}; again with "
                    f"batch {smaller.batch_size} x {smaller.accum_steps} accumulation steps (same "
                    f"effective batch)", trial.number, level="warning")

    def _event(self, kind: str, message: str, number: int, level: str = "info") -> None:
        """An event in the database (what viewers show) and a line in this worker's log."""
        self.store.add_event(self.study_id, kind, message, level=level, trial_number=number)
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)

    def _report(self, number: int, state: optuna.trial.TrialState, values: list[float] | None,
                reason: str | None, seconds: float) -> None:
        names = self.config.objective.metrics()
        if state == optuna.trial.TrialState.COMPLETE and values is not None:
            shown = ", ".join(f"{n}={v:.4f}" for n, v in zip(names, values, strict=True))
            self._event(EventKind.TRIAL_COMPLETE, f"trial {number} complete: {shown} in {seconds:.1f}s", number)
        elif state == optuna.trial.TrialState.PRUNED:
            self._event(EventKind.TRIAL_PRUNED, f"trial {number} {reason} after {seconds:.1f}s", number)
        elif reason == INTERRUPTED:
            self._event(EventKind.TRIAL_INTERRUPTED, f"trial {number} interrupted after {seconds:.1f}s: it will run "
                        "again on resume", number)
        else:
            self._event(EventKind.TRIAL_FAILED, f"trial {number} failed: {reason}", number, level="warning")

    def _maybe_checkpoint(self, number: int, value: float, models: list[Any], params: dict[str, Any],
                          per_fold: list[EpochMetrics]) -> None:
        """Keep this trial's weights if they rank among the study's best `checkpoints.keep`: one
        package per fold, each normalised with its own fold's training statistics (the last fold's
        is the trial's checkpoint; with k-fold the others lie beside it, for a fold ensemble)."""
        maximize = self.config.objective.directions()[0] == "maximize"
        cfg = trial_train_config(self.config, params)
        metrics = {k: float(np.mean([m.to_dict()[k] for m in per_fold])) for k in per_fold[-1].to_dict()}

        def packaged() -> list[bytes]:  # only for a checkpoint that is kept
            files = []
            for fold, (model, final) in enumerate(zip(models, per_fold, strict=True)):
                mean, std = self.data.mean_std(cfg.image_size, self.splits[fold][0])
                files.append(package_bytes(model, package_meta(
                    train=cfg.model_dump(mode="json"), data=self.config.data.model_dump(mode="json"),
                    classes=self.data.scan.classes, image_size=cfg.image_size, decode_size=self.decode_size,
                    mean=mean, std=std, metrics=metrics, fold_metrics=final.to_dict(), study=self.sweep.study_name,
                    trial=number, value=value, maximize=maximize, params=params, fold=fold)))
            return files

        keep = self.config.checkpoints
        try:
            if checkpoints.save(self.artifacts, number, packaged,
                                lambda numbers: self.store.values_of(self.study_id, numbers), maximize, keep.keep,
                                keep.budget_mb):
                log.info("trial %s: checkpoint kept (one of the best %s)", number, keep.keep)
        except OSError as exc:  # the trial's result is in the database already: only its weights are lost
            self._event(EventKind.CHECKPOINT, f"trial {number}: checkpoint not saved ({exc.strerror or exc})", number,
                        level="warning")


def _watch_parent(parent: int, signalled: threading.Event) -> None:
    """An engine killed with SIGKILL cannot stop its workers: each notices it is orphaned and
    stops as on Ctrl-C (its trial is failed and queued again), instead of running on unseen."""
    while not signalled.is_set():
        if os.getppid() != parent:
            log.warning("the engine (pid %d) is gone: stopping", parent)
            signalled.set()
            return
        time.sleep(PARENT_POLL_S)


def _lineage(trial: optuna.Trial) -> int:
    """The first trial of a chain of reruns (`recovery.requeue`'s `retry_of`): its own number otherwise."""
    return int(trial.user_attrs.get("retry_of", trial.number))


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def run_worker(args: WorkerArgs) -> int:
    """Run trials until the sweep ends; the exit code (DISK_EXIT when the disk is full,
    DEVICE_EXIT when torch cannot use the device it was given)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{args.index} %(levelname)s %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # We run the heartbeat ourselves (class Heartbeat): ask/tell with heartbeats is intended here.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if args.threads:
        set_threads(args.threads)
    # torch.compile's kernels, kept in the workspace: every worker, and later sweeps, reuse them
    # instead of compiling again (a variable the user set wins).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(args.workdir / ".cache" / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(args.workdir / ".cache" / "triton"))
    signalled = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: signalled.set())
    if args.parent:  # given, not read with getppid(): the engine may have died while this one started
        threading.Thread(target=_watch_parent, args=(args.parent, signalled), daemon=True).start()
    problem = cuda_problem() if args.device.startswith("cuda") else None
    if problem:  # the engine planned GPUs from NVML; torch has the last word
        log.error("torch cannot use %s: %s", args.device, problem)
        return DEVICE_EXIT
    try:
        Worker(args.url, args.study, args.workdir, args.device, args.index, signalled).run()
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
