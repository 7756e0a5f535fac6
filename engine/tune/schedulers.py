"""Ray Tune's trial scheduler for a `backend: ray` sweep, built from its checked `scheduler:`
section (engine.config.schema: AshaConfig ... FifoConfig), and whether Ray Tune is there at all.

Every option counts epochs: the trainable reports once per epoch, so `training_iteration` is
the epoch. The metric and its direction are Tune's (`TuneConfig`), not the scheduler's.
Ray is imported inside the functions: the extra is optional (`pip install 'tui-hpo[ray]'`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from engine.config.schema import (
    AshaConfig,
    FifoConfig,
    HyperbandConfig,
    MedianConfig,
    Mutation,
    Pb2Config,
    PbtConfig,
    SweepConfig,
)

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

RAY_MISSING = "backend: ray needs Ray Tune: pip install 'tui-hpo[ray]'"
TIME_ATTR = "training_iteration"  # one per epoch reported


def ray_missing() -> str | None:
    """None when Ray Tune can be imported; else the one line that says which extra installs it."""
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        return RAY_MISSING
    return None


def scheduler_name(config: SweepConfig) -> str:
    return config.scheduler.name if config.scheduler else "asha"


def evolves(config: SweepConfig) -> bool:
    """PBT and PB2: trials clone each other's checkpoints and mutate their parameters."""
    return scheduler_name(config) in ("pbt", "pb2")


def checkpoints_every_epoch(config: SweepConfig) -> bool:
    """Whether a trial's every report carries a checkpoint: a scheduler that clones one (PBT, PB2)
    or pauses a trial to go on later (HyperBand) acts on the epoch it just heard of. The others
    need a checkpoint only to go on after a restore, and one every CHECKPOINT_EVERY_S will do
    (engine.tune.trainable)."""
    return evolves(config) or scheduler_name(config) == "hyperband"


def build(config: SweepConfig) -> TrialScheduler:
    """The Ray scheduler `config.scheduler` describes (a validated config: its defaults filled)."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )

    section = config.scheduler
    if isinstance(section, AshaConfig | HyperbandConfig) and section.max_t is None:
        raise TypeError("an unchecked scheduler section: engine.config.schema.check() fills max_t")
    if isinstance(section, AshaConfig):
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=section.max_t, grace_period=section.grace_period,
                             reduction_factor=section.reduction_factor, brackets=section.brackets)
    if isinstance(section, HyperbandConfig):
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=section.max_t, reduction_factor=section.reduction_factor)
    if isinstance(section, MedianConfig):
        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=section.grace_period,
                                  min_samples_required=section.min_samples_required)
    if isinstance(section, PbtConfig):
        mutations = {name: _domain(config, name, m) for name, m in (section.mutations or {}).items()}
        bounds = {name: (m.low, m.high) for name, m in (section.mutations or {}).items() if m.choices is None}
        return PopulationBasedTraining(
            time_attr=TIME_ATTR, perturbation_interval=section.perturbation_interval,
            quantile_fraction=section.quantile_fraction, resample_probability=section.resample_probability,
            synch=section.synch,
            hyperparam_mutations=mutations, custom_explore_fn=functools.partial(clip, bounds))
    if isinstance(section, Pb2Config):
        from ray.tune.schedulers.pb2 import PB2

        return PB2(time_attr=TIME_ATTR, perturbation_interval=section.perturbation_interval,
                   quantile_fraction=section.quantile_fraction,
                   hyperparam_bounds={name: list(b) for name, b in (section.hyperparam_bounds or {}).items()})
    if isinstance(section, FifoConfig):
        return FIFOScheduler()
    raise TypeError(f"no Ray scheduler for {section!r}")  # backend optuna, or a section the schema added


def _domain(config: SweepConfig, name: str, mutation: Mutation) -> Any:
    """What PBT resamples `name` from: its choices, or its range, in whole numbers where the
    parameter takes them (PBT then rounds its x0.8/x1.2 perturbations too)."""
    from ray import tune

    if mutation.choices is not None:
        return list(mutation.choices)
    low, high = mutation.low, mutation.high
    assert low is not None and high is not None  # a range: Mutation checked both are there
    if config.search_space[name].kind() != "float":
        if mutation.log:
            return tune.lograndint(int(low), int(high) + 1)  # Ray's upper bound is exclusive
        return tune.randint(int(low), int(high) + 1)
    return tune.loguniform(low, high) if mutation.log else tune.uniform(low, high)


def clip(bounds: dict[str, tuple[float, float]], config: dict[str, Any]) -> dict[str, Any]:
    """PBT's explore step multiplies a value by 0.8 or 1.2, which can leave its range (a dropout
    of 0.9 becomes 1.08, which no trial can train with): back to the nearest bound. A module
    function under functools.partial, so the scheduler pickles with the experiment."""
    for name, (low, high) in bounds.items():
        if isinstance(config.get(name), int | float) and not isinstance(config[name], bool):
            config[name] = type(config[name])(min(max(config[name], low), high))
    return config
