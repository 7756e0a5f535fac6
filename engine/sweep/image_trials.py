"""Trials of the built-in trainer: a timm classifier trained on the sweep's images, decoded once
per worker. What it measures as it trains (step times, compile costs, the batch that fitted in
memory) is kept per shape for later trials and sweeps; the best trials' weights are kept as packages.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from engine.config import SweepConfig
from engine.config.space import train_params
from engine.datasets.scan import parts_of, scan, splits
from engine.errors import DeviceProblem, Interrupted, TrialTimeout
from engine.insights.gpu import gpu_usage
from engine.storage.states import EventKind
from engine.sweep import checkpoints, compile_policy
from engine.sweep.worker import out_of_memory_note
from engine.system import benchmarks
from engine.system.monitor import hostname
from engine.training import resume as resume_state
from engine.training.devices import cuda_problem, device_name, set_threads
from engine.training.fit import EarlyStop, EpochMetrics, Runtime, at_batch, fit_within_memory
from engine.training.package import package_bytes, package_meta  # imports torch and timm once, not in a trial's timing
from engine.training.tensors import ImageData, load

if TYPE_CHECKING:
    from engine.sweep.worker import Worker

log = logging.getLogger("tui_hpo.worker")


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


def sweep_data(config: SweepConfig, artifacts: Path) -> tuple[ImageData, list[Any], int]:
    """The sweep's images, its splits and the size they were decoded at. Decoded once into the
    workspace (`DIR/.cache/images`): every other worker, and later sweeps on the same files, read it.
    Every image size is resized from this decoding (a package records it)."""
    cfg = config.data
    found = scan(cfg)
    sizes = [config.train.image_size]
    spec = config.search_space.get("image_size")
    if spec is not None:
        sizes += [int(c) for c in spec.choices or []] + [int(spec.high or 0)]
    decode_size = max(sizes)
    data = load(found, cfg, decode_size, cache_dir=artifacts.parent / ".cache" / "images")
    folds = splits(data.labels.numpy(), cfg, parts_of(data.scan))
    # Resize and normalisation statistics for the default image size are computed now, once,
    # rather than inside the first trial (sizes that only the search space names come lazily).
    for train_idx, _val in folds:
        data.mean_std(config.train.image_size, train_idx)
    return data, folds, decode_size


class ImageTrials:
    """The built-in objective of a worker: loads torch, the device and the data when the worker
    starts, then trains one trial per `run`."""

    def __init__(self, worker: Worker, threads: int) -> None:
        if threads:
            set_threads(threads)
        problem = cuda_problem() if worker.device.startswith("cuda") else None
        if problem:
            raise DeviceProblem(f"torch cannot use {worker.device}: {problem}")
        self.worker = worker
        self.store, self.study_id, self.config = worker.store, worker.study_id, worker.config
        self.stop, self._event, self.artifacts = worker.stop, worker.event, worker.artifacts
        self.sweep = worker.sweep
        device = worker.device
        self.runtime = Runtime.from_resources(self.config.resources, device)
        self.device_name = device_name(device)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # the engine gives each GPU worker one GPU
        self.gpu_index = int(visible) if device.startswith("cuda") and visible.isdigit() else None
        self.compile_said: set[str] = set()  # compile decisions already reported by this worker
        self.torch_version = metadata.version("torch")  # part of every shape key; a lookup costs milliseconds
        # `tui-hpo gpu benchmark`'s figures for this device, if it ran here: compile's prior cost and gain
        self.benchmark = benchmarks.load(benchmarks.device_key(device, self.device_name))
        self.data = self._load_data()
        self._models: list[Any] = []
        self._per_fold: list[EpochMetrics] = []

    def _load_data(self) -> ImageData:
        data, self.splits, self.decode_size = sweep_data(self.config, self.artifacts)
        if data.skipped:
            shown = "; ".join(f"{p} ({why})" for p, why in data.skipped[:5])
            self.store.add_event(self.study_id, EventKind.DATA, f"{self.worker.label}: skipped {len(data.skipped)} "
                                 f"unreadable image(s): {shown}", level="warning")
        return data

    def run(self, trial: optuna.Trial, params: dict[str, Any], deadline: float | None,
            announce: Callable[[], None]) -> list[float]:
        """Train one trial; its objective value(s). Past `deadline` (monotonic) it stops at the
        next batch and fails (TrialTimeout)."""
        announce()
        started, since = time.perf_counter(), time.time()
        stop = self.stop if deadline is None else (lambda: self.stop() or time.monotonic() >= deadline)
        try:
            self._models, self._per_fold = [], []
            self._models, self._per_fold = self._train(trial, params, stop)
        except Interrupted:
            if deadline is not None and time.monotonic() >= deadline and not self.stop():
                raise TrialTimeout(f"ran past budget.trial_timeout ({self.config.budget.trial_timeout:g} s)") \
                    from None
            raise
        self._record_device_use(trial, self._per_fold, since)
        return objective_value(self.config, self._per_fold, time.perf_counter() - started)

    def after(self, trial: optuna.Trial, state: optuna.trial.TrialState, values: list[float] | None,
              interrupted: bool) -> None:
        """A finished trial's weights are kept if they rank among the best; its rerun state goes
        unless it will run again."""
        if not interrupted:  # finished, or failed for good: its rerun state is of no more use
            resume_state.remove(self.artifacts, lineage(trial))
        if state == optuna.trial.TrialState.COMPLETE and self._models and values:  # several objectives: the first
            self._maybe_checkpoint(trial.number, values[0], self._models, train_params(trial.params), self._per_fold)
        self._models, self._per_fold = [], []

    def _train(self, trial: optuna.Trial, params: dict[str, Any], stop: Any) -> tuple[list[Any], list[EpochMetrics]]:
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
            resume = resume_state.ResumeFile(resume_state.path_of(self.artifacts, lineage(trial), fold, folds),
                                             every, minutes * 60 if minutes else None) if every or minutes else None
            if models:  # the finished fold's model waits on the CPU; with no checkpoint kept, it goes
                models[-1] = models[-1].to("cpu") if self.config.checkpoints.keep else None
            model, history, cfg = fit_within_memory(
                cfg, self.data, split, runtime, on_epoch, stop,
                lambda old, new, fold=fold: self._step_down(trial, fold, old, new), early_stop, resume)
            if resume is not None and resume.resumed_from is not None:
                trial.set_user_attr("resumed_from_epoch", resume.resumed_from)
                self._event(EventKind.TRIAL, f"trial {trial.number}: went on from epoch {resume.resumed_from + 1}"
                            + (f" of fold {fold + 1}" if folds > 1 else "")
                            + f", saved by trial {lineage(trial)}'s run", trial.number)
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
        smaller = at_batch(cfg, int(fitted))
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
        step = {"batch_size": smaller.batch_size, "accum_steps": smaller.accum_steps}
        trial.set_user_attr("oom_retries", [*trial.user_attrs.get("oom_retries", []), step])
        self._event(EventKind.TRIAL_OOM, out_of_memory_note(trial.number, cfg.batch_size, step), trial.number,
                    level="warning")

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


def lineage(trial: optuna.Trial) -> int:
    """The first trial of a chain of reruns (`recovery.requeue`'s `retry_of`): its own number otherwise."""
    return int(trial.user_attrs.get("retry_of", trial.number))
