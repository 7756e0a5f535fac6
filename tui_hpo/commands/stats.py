"""Can I trust the winner: `repeat` (top configs retrained over seeds) and `compare` (Welch's
t-test between configs or models, said plainly)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from tui_hpo.commands.study import open_study, study_options


def _config_of(url: str, study: Any) -> Any:
    from engine.analysis import saved_config
    from engine.errors import UserError

    config = saved_config(url, study.study_name)
    if config is None:
        raise UserError(f"'{study.study_name}' is a plain Optuna study: there is no config to train again",
                        key="--study")
    return config


def _notes(study: Any) -> list[str]:
    import optuna

    notes = []
    if len(study.directions) > 1:
        notes.append("several objectives: ranked and compared by the first")
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        notes.append("the study is still running: this uses the trials finished so far")
    return notes


@click.command()
@click.option("--top", "top", type=click.IntRange(min=1), default=3, show_default=True, help="How many best configs.")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per config: the trial's own seed, then the next ones.")
@study_options
def repeat(top: int, n_seeds: int, workdir: str, storage: str | None, study_name: str | None, as_json: bool) -> None:
    """Retrain the top K configs with S seeds each: mean, standard deviation, 95% interval."""
    from rich.console import Console

    from engine.repeat import repeat_top, seeds_for
    from engine.store import Store
    from tui_hpo.format import number

    study, url = open_study(workdir, storage, study_name)
    config = _config_of(url, study)
    console = Console(stderr=as_json)

    def progress(trial: int, seed: int, value: float, seconds: float) -> None:
        console.print(f"trial {trial} seed {seed}: {config.objective.metrics()[0]}={number(value)} in {seconds:.1f}s")

    store = Store(url)
    try:
        sid = store.sweep(study.study_name).study_id
        results = repeat_top(study, config, store, sid, top, seeds_for(config, n_seeds), progress)
    finally:
        store.close()
    notes = _notes(study)
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "metric": config.objective.metrics()[0], "notes": notes,
                               "configs": [asdict(r) for r in results]}, indent=2))
        return
    from tui_hpo.report import repeat_table

    console.print(repeat_table(results, config.objective.metrics()[0], study.study_name))
    for note in notes:
        console.print(f"note: {note}", style="yellow")
    console.print("next: tui-hpo compare (Welch's t-test between these configs)")


@click.command()
@click.option("--by", "by", metavar="PARAM", help="Group the study's completed trials by this parameter "
              "(e.g. model in a model-comparison sweep). Default: the study's repeats, if any.")
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.05, show_default=True,
              help="Significance level.")
@study_options
def compare(by: str | None, alpha: float, workdir: str, storage: str | None, study_name: str | None,
            as_json: bool) -> None:
    """Is the best config or model really better? Welch's t-test of the best against each other."""
    from engine.errors import UserError
    from engine.stats import compare as run_compare

    study, url = open_study(workdir, storage, study_name)
    groups, source = _groups(study, url, by)
    maximize = study.directions[0].name == "MAXIMIZE"
    described, tests = run_compare(groups, maximize, alpha)
    if not described:
        raise UserError(f"study '{study.study_name}' has no completed trial to compare yet", key="--study")
    notes = _notes(study)
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "groups_from": source, "alpha": alpha, "notes": notes,
                               "groups": [asdict(d) for d in described], "tests": [asdict(t) for t in tests]},
                              indent=2))
        return
    from rich.console import Console

    from tui_hpo.report import comparison_table

    console = Console()
    console.print(comparison_table(described, f"'{study.study_name}': {source}"))
    for test in tests:
        console.print(test.verdict, style="bold green" if test.significant else "")
    for note in notes:
        console.print(f"note: {note}", style="yellow")


def _groups(study: Any, url: str, by: str | None) -> tuple[dict[str, list[float]], str]:
    """The samples to compare: repeats of top configs, or completed trials grouped by a parameter."""
    import optuna

    from engine.errors import UserError
    from engine.store import Store

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if by is None:
        store = Store(url, readonly=True)
        try:
            row = store.sweep(study.study_name)
            runs = store.repeats_of(row.study_id) if row else []
        finally:
            store.close()
        if runs:
            groups: dict[str, list[float]] = {}
            for run in runs:
                groups.setdefault(f"trial {run['trial_number']}", []).append(run["values"][0])
            return groups, "configs retrained over seeds by `tui-hpo repeat`"
        by = _most_varied(complete)
        if by is None:
            raise UserError("no repeats and no parameter that several trials share a value of: run `tui-hpo repeat` "
                            "first, or name one with --by", key="--by")
    known = {name for t in complete for name in t.params}
    if by not in known:
        raise UserError(f"no completed trial has a parameter '{by}' (known: {', '.join(sorted(known)) or 'none'})",
                        key="--by")
    groups = {}
    for trial in complete:
        if by in trial.params:
            groups.setdefault(f"{by}={trial.params[by]}", []).append(trial.values[0])
    return groups, f"completed trials grouped by {by}"


def _most_varied(trials: list[Any]) -> str | None:
    """The categorical parameter with the most values that at least two trials share."""
    import optuna

    best, best_count = None, 1
    for name in sorted({n for t in trials for n in t.params}):
        if not all(isinstance(t.distributions.get(name), optuna.distributions.CategoricalDistribution)
                   for t in trials if name in t.params):
            continue
        counts: dict[Any, int] = {}
        for t in trials:
            if name in t.params:
                counts[t.params[name]] = counts.get(t.params[name], 0) + 1
        shared = sum(1 for c in counts.values() if c >= 2)
        if shared > best_count:
            best, best_count = name, shared
    return best
