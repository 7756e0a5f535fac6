"""A Ray Tune trial of the built-in trainer: one run of `fit` that reports every epoch to Tune, so
Tune's scheduler can stop it (ASHA, median), or pause it and start it again from its own or
another trial's checkpoint with mutated hyperparameters (PBT, PB2; every report carries a
checkpoint there). Under the other schedulers a checkpoint comes with the first and last epochs
and at most every CHECKPOINT_EVERY_S between: enough to go on after a restore, without copying
the model and optimizer every few hundred milliseconds on small data, or every epoch of a large
model. Tune keeps three, so they span more than the experiment's state lags behind (a kill
restores from the one that state names; it is gone when a newer three replaced it).

It runs in a Ray worker process, possibly on another machine, and writes nothing to the study:
the driver's recorder (`engine.tune.record`) turns each report into the study's records. The
checkpoint is `fit`'s own resume state (`engine.training.resume`), so a trial continued by Tune
ends as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.artifacts import write_atomic
from engine.config import SweepConfig
from engine.sweep.image_trials import objective_value, sweep_data, trial_train_config
from engine.training.devices import set_threads
from engine.training.fit import EarlyStop, EpochMetrics, Runtime, at_batch, fit_within_memory
from engine.training.models import build_model
from engine.training.package import package_bytes, package_meta
from engine.training.resume import ResumeFile
from engine.tune.files import number_file, package_file
from engine.tune.schedulers import checkpoints_every_epoch

STATE = "state.pt"
CHECKPOINT_EVERY_S = 30.0
OWNER = "trial.json"  # which Ray trial saved the checkpoint: another's is adopted (PBT), not resumed
# A Ray worker process runs trial after trial (`reuse_actors`): the decoded images stay loaded.
_loaded: dict[str, Any] = {}


def _data(config: SweepConfig, artifacts: Path) -> tuple[Any, list[Any], int]:
    key = json.dumps([config.data.model_dump(mode="json"), str(artifacts)])
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = sweep_data(config, artifacts)
    return _loaded[key]


def train(params: dict[str, Any], sweep: dict[str, Any], study: str, artifacts: str, device: str,
          threads: int) -> None:
    """Train one trial with `params` (training keys; Tune's config) and report each epoch:
    its metrics, `objective` (the value the study records if the trial ended here) and
    `class_f1`, with the run's state as the checkpoint. A trial that trains to its end leaves
    its model's package for the recorder, which keeps it if it ranks among the best.

    Out of memory, it trains again at half the batch with twice the gradient accumulation (the
    same effective batch), as the Optuna tier's trials do: the next report says so (`oom`), and
    the checkpoint carries the batch that fitted, so a restored or cloned run starts at it."""
    from ray import tune

    config = SweepConfig.model_validate(sweep)
    if threads:
        set_threads(threads)
    data, folds, decode_size = _data(config, Path(artifacts))
    cfg = trial_train_config(config, params)
    trial_id = tune.get_context().get_trial_id()
    work = Path(tempfile.mkdtemp(prefix="tui-hpo-trial-"))
    resume = ResumeFile(work / STATE, every=1)
    checkpoint, owner = tune.get_checkpoint(), None
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            if (Path(saved) / STATE).is_file():
                shutil.copyfile(Path(saved) / STATE, resume.path)
                about = json.loads((Path(saved) / OWNER).read_text())
                owner = about.get("trial")
                resume.adopt = owner != trial_id
                fitted = int(about.get("batch_size") or cfg.batch_size)
                if fitted < cfg.batch_size:  # the batch that fitted the device, not one that did not
                    cfg = at_batch(cfg, fitted)
    adopted = [owner] if resume.adopt else []  # said in the first report after a PBT exploit
    metric = config.objective.metrics()[0]
    maximize = config.objective.directions()[0] == "maximize"
    stopping = config.train.early_stopping
    watched = metric if metric != "train_time" else "val_loss"
    early_stop = None if stopping is None else EarlyStop(watched, maximize and metric != "train_time",
                                                         stopping.patience, stopping.min_delta)
    history: list[EpochMetrics] = []
    current = [cfg]  # the batch that fits, after any step down
    steps_down: list[dict[str, int]] = []  # not yet reported
    told = [-1]  # the last epoch Tune heard of: an attempt at a smaller batch trains those again
    every_epoch = checkpoints_every_epoch(config)
    saved_at = [-math.inf]  # when the last checkpoint went with a report (monotonic)

    def on_epoch(m: EpochMetrics) -> None:
        history.append(m)
        if m.epoch <= told[0] or (resume.resumed_from is not None and m.epoch < resume.resumed_from):
            return  # reported before the checkpoint was taken, or before running out of memory
        told[0] = m.epoch
        best = early_stop.best_epoch(history) if early_stop is not None else len(history) - 1
        value = objective_value(config, [history[best]], sum(h.seconds for h in history))[0]
        # The run's last epoch, as `fit` decides it: a trial whose last report is not final was
        # stopped by Tune (its scheduler, the user, the sweep's stop).
        last = m.epoch == cfg.epochs - 1 or (early_stop is not None and m.epoch - best >= early_stop.patience)
        (work / OWNER).write_text(json.dumps({"trial": trial_id, "batch_size": current[0].batch_size}))
        if last:  # before the report: a scheduler at its max_t stops the trial as soon as it hears it
            _package(config, current[0], data, folds[0][0], decode_size, resume, Path(artifacts), trial_id, study,
                     history[best], value, params)
        report = {**m.to_dict(), "epoch": m.epoch, "objective": value, "final": last, "class_f1": list(m.class_f1),
                  "device": device}
        if adopted:
            report["adopted"] = adopted.pop()
        elif resume.resumed_from and not resume.adopt and m.epoch == resume.resumed_from:
            report["resumed_from"] = resume.resumed_from  # its own checkpoint: a restored experiment
        if steps_down:
            report["oom"] = steps_down.copy()
            steps_down.clear()
        due = every_epoch or last or time.monotonic() - saved_at[0] >= CHECKPOINT_EVERY_S
        if due:
            saved_at[0] = time.monotonic()
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(work)) if due else None)

    def on_step_down(old: Any, smaller: Any) -> None:
        steps_down.append({"from": old.batch_size, "batch_size": smaller.batch_size,
                           "accum_steps": smaller.accum_steps})
        current[0] = smaller
        history.clear()  # the smaller batch trains from the start (or the checkpoint) again

    try:
        fit_within_memory(cfg, data, folds[0], Runtime.from_resources(config.resources, device), on_epoch,
                          lambda: False, on_step_down, early_stop, resume)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _package(config: SweepConfig, cfg: Any, data: Any, train_idx: Any, decode_size: int, resume: ResumeFile,
             artifacts: Path, ray_trial: str, study: str, best: EpochMetrics, value: float,
             params: dict[str, Any]) -> None:
    """The finished run's model as a package (the weights `fit` just saved: its best epoch's with
    early stopping), left in the study's folder for the recorder, which keeps it if it ranks among
    the best. Skipped without the study's folder here (a cluster node) or with no checkpoint kept."""
    number = number_file(artifacts, ray_trial)
    if not config.checkpoints.keep or not number.is_file():
        return
    import torch

    state = torch.load(resume.path, map_location="cpu", weights_only=False)
    model = build_model(cfg, data.num_classes)
    model.load_state_dict(state["best_state"] or state["model"])
    trial = int(number.read_text())
    mean, std = data.mean_std(cfg.image_size, train_idx)
    metrics = best.to_dict()
    meta = package_meta(train=cfg.model_dump(mode="json"), data=config.data.model_dump(mode="json"),
                        classes=data.scan.classes, image_size=cfg.image_size, decode_size=decode_size, mean=mean,
                        std=std, metrics=metrics, fold_metrics=metrics, study=study, trial=trial, value=value,
                        maximize=config.objective.directions()[0] == "maximize", params=params, fold=0)
    write_atomic(package_file(artifacts, trial), package_bytes(model, meta))
