"""`tui-hpo repeat`: the top K configs of a study trained again with S seeds each.

A sweep's winner is one draw: another seed may rank it differently. Each rerun is the trial's
complete config (as `export` writes it) with only `train.seed` changed, trained by the same
function as `tui-hpo train`. Every run is stored in the database as it finishes, so an
interrupted repeat loses nothing and a second call only trains what is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from engine.config import SweepConfig
from engine.errors import UserError
from engine.monitor import hostname
from engine.recommend import ranked
from engine.results import best_config
from engine.single import train_once
from engine.stats import Described, describe
from engine.store import Store

log = logging.getLogger("tui_hpo.repeat")


@dataclass(frozen=True)
class Repeated:
    trial: int
    params: dict
    value: float  # what the trial itself scored
    runs: dict[int, float]  # seed -> first objective value
    summary: Described


def seeds_for(config: SweepConfig, count: int) -> list[int]:
    """The trial's own seed first (its rerun checks reproduction), then the next ones."""
    return [config.train.seed + i for i in range(count)]


def objective_values(config: SweepConfig, result: dict) -> list[float]:
    return [result["seconds"] if m == "train_time" else float(result["final"][m])
            for m in config.objective.metrics()]


def repeat_top(study: optuna.Study, config: SweepConfig, store: Store, study_id: int, top: int, seeds: list[int],
               on_run: Callable[[int, int, float, float], None] | None = None) -> list[Repeated]:
    """Train each of the `top` best completed trials once per seed (skipping runs already
    recorded) and summarise each config over its seeds."""
    trials = ranked(study)[:top]
    if not trials:
        raise UserError(f"study '{study.study_name}' has no completed trial yet: nothing to repeat", key="--study")
    done = {(r["trial_number"], r["seed"]): r["values"][0] for r in store.repeats_of(study_id)}
    out = []
    for trial in trials:
        trial_config = SweepConfig.model_validate(best_config(config, trial.params))
        for seed in seeds:
            if (trial.number, seed) in done:
                continue
            run_config = trial_config.model_copy(deep=True)
            run_config.train.seed = seed
            started = time.perf_counter()
            result = train_once(run_config, run_config.resources.device)
            values = objective_values(run_config, result)
            store.add_repeat(study_id, trial.number, seed, values, time.perf_counter() - started, hostname())
            done[(trial.number, seed)] = values[0]
            log.info("trial %s seed %s: %s", trial.number, seed, values[0])
            if on_run is not None:
                on_run(trial.number, seed, values[0], time.perf_counter() - started)
        runs = {seed: done[(trial.number, seed)] for seed in seeds}
        out.append(Repeated(trial.number, dict(trial.params), trial.values[0], runs,
                            describe(f"trial {trial.number}", list(runs.values()))))
    return out
