"""How long a sweep will take, from what this workspace has measured: the seconds per epoch,
training image and pixel of finished trials of the same models (`tui-hpo validate`). No guess where nothing
was measured: a figure from another machine or model would mislead more than none."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import optuna

from engine.config import SweepConfig
from engine.storage import Store, load_study, optuna_sql, study_facts

RECENT_STUDIES = 10  # the newest studies are read (a workspace may hold many)


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the whole sweep, its workers in parallel
    per_trial_s: float
    trials_measured: int
    models: tuple[str, ...]  # the models those trials trained


def models_of(config: SweepConfig) -> set[str]:
    spec = config.search_space.get("model")
    return {str(c) for c in spec.choices} if spec is not None and spec.choices else {config.train.model}


def rates(url: str, models: set[str]) -> dict[str, list[float]]:
    """Model -> seconds per epoch, training image and pixel of the completed trials that trained
    it (a convolution's cost grows with the pixels: a 32 px trial predicts a 64 px one roughly)."""
    store = Store(url, readonly=True)
    found: dict[str, list[float]] = {}
    try:
        with store.engine.connect() as conn:
            names = [name for _sid, name in optuna_sql.studies(conn)][-RECENT_STUDIES:]
        for name in names:
            row = store.sweep(name)
            if row is None:
                continue
            try:  # a study saved by an older tui-hpo may hold keys this one no longer reads
                train = row.sweep_config().train
            except ValueError:
                continue
            study = load_study(url, name)
            n_train = study_facts(study).get("data", {}).get("train")
            if not n_train:
                continue
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                model = str(t.params.get("model", train.model))
                size = t.params.get("image_size", train.image_size)
                seconds, epochs = t.user_attrs.get("duration_s"), t.user_attrs.get("epochs")
                if model in models and seconds and epochs and isinstance(size, int):
                    found.setdefault(model, []).append(float(seconds) / (int(epochs) * int(n_train) * size**2))
    finally:
        store.close()
    return found


def estimate(url: str, config: SweepConfig, n_train: int, n_trials: int) -> Estimate | None:
    """The sweep's wall time if every trial runs its full epochs (pruning only shortens it), or
    None when no trial of these models finished in this workspace."""
    measured = rates(url, models_of(config))
    if not measured:
        return None
    per_pixel = statistics.median(r for values in measured.values() for r in values)
    size = config.train.image_size if isinstance(config.train.image_size, int) else 32
    per_trial = per_pixel * config.train.epochs * config.data.folds * n_train * size**2
    parallel = max(1, config.resources.parallel or 1)
    waves = -(-n_trials // parallel)
    return Estimate(per_trial * waves, per_trial, sum(len(v) for v in measured.values()), tuple(sorted(measured)))


def estimate_program(url: str, config: SweepConfig, n_trials: int) -> Estimate | None:
    """A program's sweep: the median time of the completed trials of the same command (in the
    same folder) in this workspace's recent studies; None when none finished yet."""
    command, cwd = config.objective.command, config.objective.cwd
    store = Store(url, readonly=True)
    seconds: list[float] = []
    try:
        with store.engine.connect() as conn:
            names = [name for _sid, name in optuna_sql.studies(conn)][-RECENT_STUDIES:]
        for name in names:
            row = store.sweep(name)
            objective = (row.config.get("objective") or {}) if row is not None else {}
            if objective.get("command") != command or objective.get("cwd") != cwd:
                continue
            seconds += [float(t.user_attrs["duration_s"]) for t in load_study(url, name).get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.user_attrs.get("duration_s")]
    finally:
        store.close()
    if not seconds:
        return None
    per_trial = statistics.median(seconds)
    waves = -(-n_trials // max(1, config.resources.parallel or 1))
    return Estimate(per_trial * waves, per_trial, len(seconds), (" ".join(command or []),))
