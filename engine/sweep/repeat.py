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
from pathlib import Path

import optuna

from engine.config import SweepConfig
from engine.config.space import train_params
from engine.errors import ConfigError, UserError
from engine.insights.recommend import ranked
from engine.insights.results import best_config
from engine.insights.stats import Described, describe
from engine.storage import Store
from engine.system.monitor import hostname
from engine.system.platform import choose_platform
from engine.training.devices import probe
from engine.training.single import train_once  # a program's repeat imports torch too: a CLI command, not a worker

log = logging.getLogger("tui_hpo.repeat")


@dataclass(frozen=True)
class Repeated:
    trial: int
    params: dict
    value: float  # what the trial itself scored
    runs: dict[int, float]  # seed -> first objective value
    summary: Described


def seeds_for(trial_seed: int, count: int) -> list[int]:
    """The trial's own seed first, then the next ones: the first rerun should reproduce the trial
    (a check that the config and the machine are the same), the others measure the spread."""
    return [trial_seed + i for i in range(count)]


def objective_values(config: SweepConfig, result: dict) -> list[float]:
    """The run's objective values, in the study's order (train_time is the run's own seconds)."""
    missing = [m for m in config.objective.metrics() if m != "train_time" and m not in result["final"]]
    if missing:
        raise UserError(f"the run reported no '{missing[0]}'")
    return [result["seconds"] if m == "train_time" else float(result["final"][m])
            for m in config.objective.metrics()]


def platform_for(config: SweepConfig, study_name: str) -> str:
    """The platform the sweep trained on, which this machine must have: a rerun elsewhere would
    neither match the trial nor, on a CPU-only machine, run at all."""
    try:
        return choose_platform(probe(), config.resources.device)
    except ConfigError as exc:
        raise UserError(f"'{study_name}' trained on {config.resources.device}: {exc.detail}; repeat it where "
                        "the sweep ran", key="--study") from None


def program_seed(config: SweepConfig, study_name: str) -> int:
    """A program's seed is its parameter `seed` (fixed in `train:`, searched, or handed over in a
    variable of its own); a program without one cannot be run again with another seed."""
    if "seed" not in config.params and "seed" not in config.search_space:
        raise UserError(f"'{study_name}' runs a program that takes no 'seed' parameter: add `train: {{seed: 0}}` "
                        "(and have the program use it) to repeat it over seeds", key="--study")
    seed = config.params.get("seed", 0)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def repeat_top(study: optuna.Study, config: SweepConfig, store: Store, study_id: int, top: int, count: int,
               seed_list: list[int] | None = None,
               on_run: Callable[[int, int, float, float], None] | None = None,
               folder: Path | None = None) -> list[Repeated]:
    """Train each of the `top` best completed trials once per seed (`seed_list`, or `count` seeds
    from the trial's own), skip the runs already recorded, and summarise each config over its
    seeds. A program's runs keep their files in `folder`/repeats/. No completed trial: an empty
    list, for the caller to say so."""
    trials = ranked(study)[:top]
    if not trials:
        return []
    program = config.runs_command
    if program:
        program_seed(config, study.study_name)
    platform = None if program else platform_for(config, study.study_name)
    done = {(r["trial_number"], r["seed"]): r["values"][0] for r in store.repeats_of(study_id)}
    out = []
    for trial in trials:
        trial_config = SweepConfig.model_validate(best_config(config, trial.params))
        seeds = seed_list or seeds_for(program_seed(trial_config, study.study_name) if program
                                       else trial_config.train.seed, count)
        for seed in seeds:
            if (trial.number, seed) in done:
                continue
            run_config = trial_config.model_copy(deep=True)
            started = time.perf_counter()
            if program:
                from engine.sweep.command_trials import ProgramFailed, run_once

                run_config.params["seed"] = seed
                where = (folder or Path.cwd()) / "repeats" / f"trial{trial.number}-seed{seed}"
                try:
                    result = run_once(run_config, {}, where, study.study_name, trial.number)
                except ProgramFailed as exc:
                    raise UserError(f"trial {trial.number} with seed {seed}: {str(exc).splitlines()[0]} (its output: "
                                    f"{where / 'output.log'})") from None
            else:
                run_config.train.seed = seed
                result = train_once(run_config, platform or "cpu")
            values = objective_values(run_config, result)
            seconds = time.perf_counter() - started
            store.add_repeat(study_id, trial.number, seed, values, seconds, hostname())
            done[(trial.number, seed)] = values[0]
            log.info("trial %s seed %s: %s in %.1fs", trial.number, seed, values[0], seconds)
            if on_run is not None:
                on_run(trial.number, seed, values[0], seconds)
        runs = {seed: done[(trial.number, seed)] for seed in seeds}
        out.append(Repeated(trial.number, train_params(trial.params), trial.values[0], runs,
                            describe(list(runs.values()), f"trial {trial.number}")))
    return out
