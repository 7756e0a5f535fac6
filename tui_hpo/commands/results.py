"""How a study went and which trials won: `summary`, `top` and `importance`."""

from __future__ import annotations

import json

import click

from engine.storage import Workspace, study_facts
from tui_hpo.commands.study import study_folder, study_from
from tui_hpo.options import check_out_dir, check_out_file, study_options


@click.command()
@study_options
def summary(workspace: Workspace, study_name: str | None, as_json: bool) -> None:
    """How a study went: trials by state, best, compute time, what pruning saved, failures."""
    from engine.insights.summary import summary as make_summary

    study = study_from(workspace, study_name)
    url = workspace.url
    report = make_summary(study, url)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    from rich.console import Console

    from tui_hpo.tables import summary_table

    Console().print(summary_table(report))


@click.command()
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many trials.")
@study_options
def top(n: int, workspace: Workspace, study_name: str | None, as_json: bool) -> None:
    """The best trials of a study: value(s), params, epochs, duration."""
    from engine.insights.results import top_rows

    study = study_from(workspace, study_name)
    rows = top_rows(study, n)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"study '{study.study_name}' has no completed trial yet")
        return
    from rich.console import Console

    from tui_hpo.headless import top_table

    metrics = study_facts(study).get("metrics") or ["value"] * len(study.directions)
    Console().print(top_table(rows, metrics, f"Top {len(rows)} trials of '{study.study_name}'"))


@click.command(name="importance")
@click.option("--evaluator", type=click.Choice(["ped-anova", "fanova"]), default="ped-anova", show_default=True,
              help="PED-ANOVA (Optuna's default) or fANOVA (needs scikit-learn).")
@study_options
def importance_command(evaluator: str, workspace: Workspace, study_name: str | None,
                       as_json: bool) -> None:
    """Which parameters mattered for the first objective, as bars (or JSON)."""
    from engine.insights.summary import importance

    study = study_from(workspace, study_name)
    scores = importance(study, evaluator)
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "evaluator": evaluator, "importance": scores}, indent=2))
        return
    from rich.console import Console

    from tui_hpo.tables import importance_table

    Console().print(importance_table(scores, f"Parameter importance in '{study.study_name}' ({evaluator})"))


@click.command(name="export")
@click.option("--out", metavar="DIR", callback=check_out_dir, help="Where to write (default: WORKDIR/<study>/).")
@study_options
def export_command(out: str | None, workspace: Workspace, study_name: str | None, as_json: bool) -> None:
    """Write report.json, trials.csv, best_params.yaml and a trainable best_config.yaml."""
    from pathlib import Path

    from engine.insights.results import export_results
    from engine.insights.summary import saved_config

    study = study_from(workspace, study_name)
    url = workspace.url
    config = saved_config(url, study.study_name)
    folder = Path(out) if out else study_folder(workspace, study.study_name)
    written = export_results(study, config, folder, url)
    notes = []
    if not any(p.name == "best_params.yaml" for p in written):
        notes.append("no completed trial yet: no best config")
    elif config is None:
        notes.append("a plain Optuna study: no sweep config, so no best_config.yaml")
    elif len(study.directions) > 1:
        notes.append("several objectives: best_params.yaml holds the Pareto front, so no single best_config.yaml")
    if as_json:
        click.echo(json.dumps({"study": study.study_name, "files": [str(p) for p in written], "notes": notes},
                              indent=2))
        return
    for path in written:
        click.echo(f"wrote {path}")
    for note in notes:
        click.echo(note)
    if folder / "best_config.yaml" in written:
        click.echo(f"train it again: tui-hpo train --config {folder / 'best_config.yaml'}")


@click.command()
@click.option("--top-fraction", type=click.FloatRange(0.01, 1.0), default=0.2, show_default=True,
              help="The share of completed trials whose ranges are kept.")
@click.option("--fix-below", type=click.FloatRange(0.0, 1.0), metavar="IMPORTANCE",
              help="Fix parameters less important than this at the best trial's value (fine-tuning).")
@click.option("--out", metavar="FILE", callback=check_out_file,
              help="The focused sweep YAML (default: WORKDIR/<study>/recommended.yaml).")
@study_options
def recommend(top_fraction: float, fix_below: float | None, out: str | None, workspace: Workspace,
              study_name: str | None, as_json: bool) -> None:
    """The next sweep: the search space narrowed to where the best trials fell, as a YAML file."""
    from dataclasses import asdict
    from pathlib import Path

    from engine.errors import UserError
    from engine.insights.recommend import recommend as make
    from engine.insights.recommend import write_recommendation
    from engine.insights.summary import saved_config

    study = study_from(workspace, study_name)
    url = workspace.url
    config = saved_config(url, study.study_name)
    if config is None:
        raise UserError(f"'{study.study_name}' is a plain Optuna study: it has no search space of ours to narrow",
                        key="--study")
    result = make(study, config, top_fraction, fix_below)
    path = Path(out) if out else study_folder(workspace, study.study_name) / "recommended.yaml"
    write_recommendation(result, path)
    if as_json:
        click.echo(json.dumps({**asdict(result), "file": str(path)}, indent=2, default=str))
        return
    from rich.console import Console

    from tui_hpo.tables import recommendation_table

    console = Console()
    console.print(recommendation_table(result))
    for note in result.notes:
        console.print(f"note: {note}", style="yellow")
    console.print(f"wrote {path}\nrun it: tui-hpo run --config {path}")
