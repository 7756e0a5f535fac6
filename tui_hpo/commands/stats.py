"""Can I trust the winner: `repeat` (top configs retrained over seeds) and `compare` (Welch's
t-test between configs or models, said plainly)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from engine.storage import Workspace
from tui_hpo.commands.study import study_from
from tui_hpo.options import study_options

EXIT_INTERRUPTED = 130


def _config_of(url: str, study: Any) -> Any:
    from engine.errors import UserError
    from engine.insights.summary import saved_config

    config = saved_config(url, study.study_name)
    if config is None:
        raise UserError(f"'{study.study_name}' is a plain Optuna study: there is no config to train again",
                        key="--study")
    return config


def _metric(study: Any, url: str) -> str:
    """The first objective's name (what both commands rank and compare by): "value" for a plain
    Optuna study, which names none."""
    from engine.insights.summary import saved_config

    config = saved_config(url, study.study_name)
    return config.objective.metrics()[0] if config is not None else "value"


def _notes(study: Any, metric: str) -> list[str]:
    """What the user should know about the numbers: a second objective left out, a live sweep."""
    import optuna

    notes = []
    if len(study.directions) > 1:
        notes.append(f"{len(study.directions)} objectives: ranked and compared by the first ({metric})")
    if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        notes.append("the study is still running: this uses the trials finished so far")
    return notes


def _nothing_completed(study: Any) -> str:
    """Why there is nothing to work on, with the trials there are by state."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        state = "failed" if trial.state.name == "FAIL" else trial.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
    states = f" ({', '.join(f'{n} {state}' for state, n in sorted(counts.items()))})" if counts else ""
    return f"study '{study.study_name}' has no completed trial yet{states}"


@click.command()
@click.option("--top", "top", type=click.IntRange(min=1), default=3, show_default=True, help="How many best configs.")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per config: the trial's own seed, then the next ones.")
@click.option("--seed-list", metavar="S1,S2,...", help="These seeds for every config instead (e.g. 42,123,456).")
@study_options
def repeat(top: int, n_seeds: int, seed_list: str | None, workspace: Workspace,
           study_name: str | None, as_json: bool) -> None:
    """Retrain the top K configs with S seeds each: mean, standard deviation, 95% interval.

    Every run is stored as it finishes: run it again (after Ctrl-C, or with more --seeds) and only
    the missing runs train."""
    from rich.console import Console

    from engine.storage import Store
    from engine.sweep.repeat import repeat_top
    from tui_hpo.format import number

    seeds = _parse_seeds(seed_list)
    study = study_from(workspace, study_name)
    url = workspace.url
    config = _config_of(url, study)
    metric = config.objective.metrics()[0]
    console = Console(stderr=as_json)
    trained: list[tuple[int, int]] = []

    def progress(trial: int, seed: int, value: float, seconds: float) -> None:
        trained.append((trial, seed))
        console.print(f"trial {trial} seed {seed}: {metric}={number(value)} in {seconds:.1f}s")

    store = Store(url)
    try:
        sid = store.sweep(study.study_name).study_id
        results = repeat_top(study, config, store, sid, top, n_seeds, seeds, progress,
                             workspace.workdir / study.study_name)
    except KeyboardInterrupt:
        console.print(f"interrupted: the {len(trained)} run(s) finished are stored; run the same command again "
                      "to train the rest", style="yellow")
        sys.exit(EXIT_INTERRUPTED)
    finally:
        store.close()
    notes = _notes(study, metric)
    if not results:
        notes.insert(0, f"{_nothing_completed(study)}: nothing to repeat")
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "metric": metric, "trained_now": len(trained),
                               "notes": notes, "configs": [asdict(r) for r in results]}, indent=2))
        return
    if results:
        from tui_hpo.tables import repeat_table

        console.print(repeat_table(results, metric, study.study_name))
    for note in notes:
        console.print(f"note: {note}", style="yellow")
    if results:
        console.print("next: tui-hpo compare (Welch's t-test between these configs)")


def _parse_seeds(text: str | None) -> list[int] | None:
    """`42,123,456` as distinct integers, in the order given."""
    from engine.errors import UserError

    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"'{text}' is not a comma-separated list of integer seeds", key="--seed-list") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"'{text}' needs at least one seed, each once", key="--seed-list")
    if any(seed < 0 for seed in seeds):
        raise UserError(f"'{text}': seeds are 0 or more", key="--seed-list")
    return seeds


@click.command()
@click.option("--by", "by", metavar="PARAM", help="Group the study's completed trials by this parameter "
              "(e.g. model in a model-comparison sweep). Default: the study's repeats, if any.")
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.05, show_default=True,
              help="Significance level.")
@study_options
def compare(by: str | None, alpha: float, workspace: Workspace, study_name: str | None,
            as_json: bool) -> None:
    """Is the best config or model really better? Welch's t-test of the best against each other.

    Without --by: the configs `tui-hpo repeat` retrained, else the categorical parameter with the
    most shared values."""
    import optuna

    from engine.insights.stats import compare_groups

    study = study_from(workspace, study_name)
    url = workspace.url
    metric = _metric(study, url)
    notes = _notes(study, metric)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        groups, source = _groups(study, url, complete, by)
        described, tests = compare_groups(groups, maximize, alpha)
    else:
        source, described, tests = "", [], []
        notes.insert(0, f"{_nothing_completed(study)}: nothing to compare")
    if len(described) == 1:
        notes.insert(0, f"only one group ({described[0].name}): nothing to compare it with")
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "metric": metric,
                               "direction": "maximize" if maximize else "minimize", "groups_from": source,
                               "alpha": alpha, "notes": notes, "groups": [asdict(d) for d in described],
                               "tests": [asdict(t) for t in tests]}, indent=2))
        return
    from rich.console import Console

    from tui_hpo.tables import comparison_table

    console = Console()
    if described:
        console.print(comparison_table(described, f"'{study.study_name}' {metric}, {source}"))
    for test in tests:
        console.print(test.verdict, style="bold green" if test.significant else "")
    for note in notes:
        console.print(f"note: {note}", style="yellow")


def _groups(study: Any, url: str, complete: list[Any], by: str | None) -> tuple[dict[str, list[float]], str]:
    """The samples to compare: repeats of top configs, or completed trials grouped by a parameter."""
    import optuna

    from engine.config.space import train_params
    from engine.errors import UserError

    if by is None:
        groups = _repeat_groups(study, url)
        if groups:
            return groups, "configs retrained over seeds by `tui-hpo repeat`"
        by = _most_varied(complete)
        if by is None:
            raise UserError("no repeats and no categorical parameter with a value shared by several trials: run "
                            "`tui-hpo repeat` first, or name a parameter with --by", key="--by")
    params = [train_params(t.params) for t in complete]
    known = {name for p in params for name in p}
    if by not in known:
        raise UserError(f"no completed trial has a parameter '{by}' (known: {', '.join(sorted(known)) or 'none'})",
                        key="--by")
    groups = {}
    for trial, p in zip(complete, params, strict=True):
        if by in p:
            groups.setdefault(f"{by}={p[by]}", []).append(trial.values[0])
    continuous = any(isinstance(train_params(t.distributions).get(by), optuna.distributions.FloatDistribution)
                     for t in complete)
    if continuous or all(len(values) == 1 for values in groups.values()):
        raise UserError(f"'{by}' {'is continuous' if continuous else 'never repeats a value'}: its groups would be "
                        "single trials, with nothing to average; group by a categorical parameter such as model",
                        key="--by")
    return groups, f"completed trials grouped by {by}"


def _repeat_groups(study: Any, url: str) -> dict[str, list[float]]:
    """The first objective of every run `tui-hpo repeat` recorded, per trial (none for a plain
    Optuna study, which has no tables of ours)."""
    from engine.insights.summary import sweep_row
    from engine.storage import Store

    row = sweep_row(url, study.study_name)
    if row is None:
        return {}
    store = Store(url, readonly=True)
    try:
        runs = store.repeats_of(row.study_id)
    finally:
        store.close()
    groups: dict[str, list[float]] = {}
    for run in runs:
        groups.setdefault(f"trial {run['trial_number']}", []).append(run["values"][0])
    return groups


def _most_varied(trials: list[Any]) -> str | None:
    """The categorical parameter with the most values that at least two trials share (the model
    of a model-comparison sweep). Never the seed: its replicates are the samples, not a group."""
    import optuna

    from engine.config.space import train_params

    folded = [(train_params(t.params), train_params(t.distributions)) for t in trials]
    best, best_count = None, 1
    for name in sorted({n for params, _ in folded for n in params} - {"seed"}):
        if not all(isinstance(distributions.get(name), optuna.distributions.CategoricalDistribution)
                   for params, distributions in folded if name in params):
            continue
        counts: dict[Any, int] = {}
        for params, _ in folded:
            if name in params:
                counts[params[name]] = counts.get(params[name], 0) + 1
        shared = sum(1 for c in counts.values() if c >= 2)
        if shared > best_count:
            best, best_count = name, shared
    return best
