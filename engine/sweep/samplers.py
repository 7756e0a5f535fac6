"""Optuna samplers and pruners by name, from the `sampler:` and `pruner:` config sections.

Tiers, as the original tool had them: Basic (grid, random), Advanced (TPE with pruning, the
default; CMA-ES; QMC), multi-objective (NSGA-II, or TPE).
"""

from __future__ import annotations

from typing import Any

import optuna

from engine.config import SweepConfig
from engine.config.space import grid_values
from engine.errors import ConfigError


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler without its `study.stop()` after the last point: stop() raises outside
    `optimize()`, and our workers use ask/tell. The engine caps n_trials at the grid size instead."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any,
                    values: Any) -> None:
        return None


def make_sampler(config: SweepConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler for one worker. Seeds differ per worker, else parallel workers would propose
    the same random start-up points."""
    name, options = config.sampler.name, dict(config.sampler.options)
    seed = None if config.sampler.seed is None else config.sampler.seed + worker_index
    factories: dict[str, Any] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **options),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed, **options),
        "grid": lambda: AskTellGridSampler(grid_values(config.search_space), seed=seed, **options),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **options),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False, **options),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, **options),
    }
    try:
        return factories[name]()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{exc}", key="sampler.options") from None
    except ImportError as exc:
        raise ConfigError(f"the {name} sampler needs a package that is missing: {exc.name}",
                          key="sampler.name") from None


def make_pruner(config: SweepConfig) -> optuna.pruners.BasePruner:
    name, options = config.pruner.name, dict(config.pruner.options)
    steps = config.train.epochs if config.data.folds == 1 else config.data.folds
    factories: dict[str, Any] = {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**{"n_startup_trials": 4, "n_warmup_steps": 1, **options}),
        "percentile": lambda: optuna.pruners.PercentilePruner(**{"percentile": 25.0, "n_startup_trials": 4,
                                                                 "n_warmup_steps": 1, **options}),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**options),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**{"min_resource": 1, "max_resource": steps,
                                                               **options}),
        "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(**{"p_threshold": 0.1, **options}),
        "threshold": lambda: optuna.pruners.ThresholdPruner(**options),
    }
    try:
        pruner = factories[name]()
        if config.pruner.patience is not None and name != "none":
            pruner = optuna.pruners.PatientPruner(pruner, patience=config.pruner.patience)
        return pruner
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{exc}", key="pruner.options") from None
