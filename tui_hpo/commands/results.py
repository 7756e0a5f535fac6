"""How a study went and which trials won: `summary`, `top` and `importance`."""

from __future__ import annotations

import json

import click

from tui_hpo.commands.study import open_study, study_options


@click.command()
@study_options
def summary(workdir: str, storage: str | None, study_name: str | None, as_json: bool) -> None:
    """How a study went: trials by state, best, compute time, what pruning saved, failures."""
    from engine.analysis import summary as make_summary

    study, url = open_study(workdir, storage, study_name)
    report = make_summary(study, url)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    from rich.console import Console

    from tui_hpo.report import summary_table

    Console().print(summary_table(report))


@click.command()
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many trials.")
@study_options
def top(n: int, workdir: str, storage: str | None, study_name: str | None, as_json: bool) -> None:
    """The best trials of a study: value(s), params, epochs, duration."""
    from engine.results import top_rows

    study, _url = open_study(workdir, storage, study_name)
    rows = top_rows(study, n)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"study '{study.study_name}' has no completed trial yet")
        return
    from rich.console import Console

    from tui_hpo.headless import top_table

    metrics = study.user_attrs.get("tui_hpo", {}).get("metrics") or ["value"] * len(study.directions)
    Console().print(top_table(rows, metrics, f"Top {len(rows)} trials of '{study.study_name}'"))


@click.command(name="importance")
@click.option("--evaluator", type=click.Choice(["ped-anova", "fanova"]), default="ped-anova", show_default=True,
              help="PED-ANOVA (Optuna's default) or fANOVA (needs scikit-learn).")
@study_options
def importance_command(evaluator: str, workdir: str, storage: str | None, study_name: str | None,
                       as_json: bool) -> None:
    """Which parameters mattered for the first objective, as bars (or JSON)."""
    from engine.analysis import importance

    study, _url = open_study(workdir, storage, study_name)
    scores = importance(study, evaluator)
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "evaluator": evaluator, "importance": scores}, indent=2))
        return
    from rich.console import Console

    from tui_hpo.report import importance_table

    Console().print(importance_table(scores, f"Parameter importance in '{study.study_name}' ({evaluator})"))
