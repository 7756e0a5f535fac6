"""What the Analysis screen's plots are drawn from: a study's trials, read once per study version
in a thread worker and kept as plain frozen rows, so cycling plots never touches the database.

The heavy figures (the Pareto front, the hypervolume after each trial) are computed here, in the
worker, too; everything else is O(trials) and drawn on demand at the panel's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class Param:
    """A parameter as its plots need it: how to place its values on an axis."""

    name: str
    kind: str  # "float", "int" or "categorical"
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.kind != "categorical"

    @property
    def label(self) -> str:
        return f"{self.name} (log)" if self.log else self.name


@dataclass(frozen=True)
class Trial:
    number: int
    state: str  # an Optuna TrialState name
    values: tuple[float, ...] | None
    params: dict[str, Any]
    start: float | None
    complete: float | None
    worker: str | None = None  # the `worker` user attribute tui-hpo's workers set
    intermediate: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One version of a study. `front` (trial numbers on the Pareto front) and `hypervolume`
    ((trial number, hypervolume after it) per completed trial) are empty for one objective."""

    study: str
    directions: tuple[str, ...]  # "maximize" or "minimize", one per objective
    metrics: tuple[str, ...]
    params: tuple[Param, ...]
    trials: tuple[Trial, ...]  # by number
    front: tuple[int, ...] = ()
    hypervolume: tuple[tuple[int, float], ...] = ()
    reference: tuple[float, ...] = ()  # the hypervolume's reference point

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    @cached_property
    def complete(self) -> list[Trial]:
        """The completed trials: the ones every objective plot is about."""
        return [t for t in self.trials if t.state == "COMPLETE" and t.values is not None]

    def maximize(self, objective: int) -> bool:
        return self.directions[objective] == "maximize"

    def metric(self, objective: int) -> str:
        return self.metrics[objective] if objective < len(self.metrics) else f"objective {objective}"


def read_snapshot(study: Any, metrics: Sequence[str]) -> Snapshot:
    """`study` (an optuna.Study, loaded read-only) as a Snapshot, with its Pareto front and
    hypervolume history when it has several objectives, named by objective_names()."""
    from tui_hpo.plots.pareto import front_of, hypervolume_history, reference_point

    directions = tuple(d.name.lower() for d in study.directions)
    trials, params = [], {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            params.setdefault(name, _param(name, dist))
        worker = t.user_attrs.get("worker")
        trials.append(Trial(
            t.number, t.state.name, tuple(t.values) if t.values is not None else None, dict(t.params),
            t.datetime_start.timestamp() if t.datetime_start else None,
            t.datetime_complete.timestamp() if t.datetime_complete else None,
            str(worker) if worker is not None else None,
            tuple(sorted((int(s), float(v)) for s, v in t.intermediate_values.items()))))
    trials.sort(key=lambda t: t.number)
    snap = Snapshot(study.study_name, directions, objective_names(study, metrics), tuple(params.values()),
                    tuple(trials))
    if not snap.multi or not snap.complete:
        return snap
    values = [t.values for t in snap.complete]
    reference = reference_point(values, directions)
    return Snapshot(snap.study, directions, snap.metrics, snap.params, snap.trials,
                    tuple(snap.complete[i].number for i in front_of(values, directions)),
                    tuple(zip((t.number for t in snap.complete), hypervolume_history(values, directions, reference),
                              strict=True)),
                    reference)


def objective_names(study: Any, metrics: Sequence[str]) -> tuple[str, ...]:
    """One name per objective: Optuna's metric names when the study set them (optuna-dashboard
    shows those too), else the sweep's `metrics` when there is one per objective."""
    n = len(study.directions)
    if study.metric_names:
        return tuple(study.metric_names)
    if len(metrics) == n:
        return tuple(metrics)
    return ("value",) if n == 1 else tuple(f"objective {i}" for i in range(n))


def _param(name: str, dist: Any) -> Param:
    kind = type(dist).__name__
    if kind == "CategoricalDistribution":
        return Param(name, "categorical", choices=tuple(dist.choices))
    return Param(name, "int" if kind == "IntDistribution" else "float", bool(getattr(dist, "log", False)))
