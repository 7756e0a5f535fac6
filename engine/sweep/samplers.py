"""Optuna samplers and pruners by name, from the `sampler:` and `pruner:` config sections.

Tiers, as the original tool had them: Basic (grid, random), Advanced (TPE with pruning, the
default; CMA-ES; QMC), multi-objective (NSGA-II, or TPE).
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import optuna

from engine.config import SweepConfig
from engine.config.space import grid_points
from engine.errors import ConfigError

log = logging.getLogger("tui_hpo.samplers")
GRID_POINT = "grid_point"  # the trial system attribute holding the point a grid trial was handed


def _point_key(point: dict[str, Any]) -> str:
    """A point's identity across processes: the same for the dict handed out, its JSON round
    trip through the storage, and the params a trial recorded."""
    return json.dumps(point, sort_keys=True)


class PointGridSampler(optuna.samplers.BaseSampler):
    """Grid search over an explicit list of points (`grid_points`: only the valid combinations of
    a space with `when`/`by`), for workers that ask and tell against one shared storage.

    Like Optuna's GridSampler, a trial's point goes into its system attributes before it samples,
    and `sample_independent` reads it back. A point is taken by any trial holding it (running,
    waiting as a retry, or finished); a trial gets the free point at its own number's place in the
    shuffled order (the seed is the study's, the same in every worker), else the next free one, so
    workers asking at once usually get different points. There is no lock across processes: two
    workers reading the storage at the same moment may still take the same point. That rare
    duplicate is accepted, as GridSampler accepts it. When every point is taken, a point not yet
    finished, then any point, runs again rather than failing the ask; there is no `study.stop()`
    (it raises outside `optimize()`): the engine caps n_trials at the number of points."""

    def __init__(self, points: list[dict[str, Any]], seed: int | None = None) -> None:
        self._points = list(points)
        random.Random(seed or 0).shuffle(self._points)  # spreads a budget smaller than the grid
        self._keys = [_point_key(p) for p in self._points]

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.params or GRID_POINT in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return  # a retry or an enqueued trial brings its own params
        taken: set[str] = set()
        finished: set[str] = set()
        for other in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if other.number == trial.number:
                continue
            key = _point_key(other.system_attrs.get(GRID_POINT, other.params))
            taken.add(key)
            if other.state.is_finished():
                finished.add(key)
        start = trial.number % len(self._keys)
        index = self._free(start, taken)
        if index is None:
            log.warning("grid trial %s runs a point again: every point is taken (workers asked at once, or the grid "
                        "was done already)", trial.number)
            index = self._free(start, finished)
        study._storage.set_trial_system_attr(trial._trial_id, GRID_POINT,
                                             self._points[start if index is None else index])

    def _free(self, start: int, busy: set[str]) -> int | None:
        """The first point from `start` on (wrapping round) whose key is not in `busy`."""
        n = len(self._keys)
        return next((i % n for i in range(start, start + n) if self._keys[i % n] not in busy), None)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        point = trial.system_attrs.get(GRID_POINT)
        if point is None or param_name not in point:
            raise ValueError(f"trial {trial.number}: '{param_name}' is not in its grid point {point}: an enqueued "
                             "trial must give every parameter")
        return point[param_name]


def make_sampler(config: SweepConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler for one worker. Seeds differ per worker, else parallel workers would propose
    the same random start-up points."""
    name, options = config.sampler.name, dict(config.sampler.options)
    seed = None if config.sampler.seed is None else config.sampler.seed + worker_index
    factories: dict[str, Any] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **options),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed, **options),
        # The study's seed, not the worker's: every worker shares one point order (see PointGridSampler).
        "grid": lambda: PointGridSampler(grid_points(config.search_space, config.fixed()),
                                         seed=config.sampler.seed, **options),
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
    """The pruner, its warm-up in the unit trials report in: epochs (folds with k-fold). Epochs
    follow the data (`train.min_steps`), so the warm-up is a share of them: no trial is judged
    in the first quarter of its training, where a slow starter and a failure look alike."""
    name, options = config.pruner.name, dict(config.pruner.options)
    if config.runs_command:  # a program's steps are its own: its `epochs`, if it takes one by that name
        epochs = config.params.get("epochs")
        steps = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None
    else:
        steps = config.train.epochs if config.data.folds == 1 else config.data.folds
    warmup = max(1, (steps or 4) // 4)
    factories: dict[str, Any] = {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**{"n_startup_trials": 4, "n_warmup_steps": warmup, **options}),
        "percentile": lambda: optuna.pruners.PercentilePruner(**{"percentile": 25.0, "n_startup_trials": 4,
                                                                 "n_warmup_steps": warmup, **options}),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**options),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**{"min_resource": warmup, "max_resource": steps or "auto",
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
