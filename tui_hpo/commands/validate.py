"""`tui-hpo validate`: a dry run of `tui-hpo run` (the config resolved for this machine and its
data, where each value came from, the search space, the trials, the objective and the time it
should take), and `tui-hpo schema`: the native format's JSON Schema, for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.storage import Workspace
from tui_hpo.launch import RunArgs
from tui_hpo.options import check_out_file, workspace_options

DEFAULT = "default"


@click.command()
@click.argument("config_file", metavar="FILE", required=False)
@click.option("--preset", help="A preset (quick when no FILE is given).")
@click.option("--data", "--train-data", "data", metavar="PATH", help="The training images, as for `run`.")
@click.option("--labels", metavar="CSV", help="The labels CSV.")
@click.option("--val-data", metavar="PATH", help="Your own validation set.")
@click.option("--test-data", metavar="PATH", help="A test set.")
@click.option("--n-trials", type=int, help="Trials in total.")
@click.option("--timeout", type=float, metavar="S", help="The time budget in seconds.")
@click.option("--parallel", type=int, help="Worker processes.")
@click.option("--backend", type=click.Choice(["optuna", "ray"]), help="Optuna's workers, or Ray Tune.")
@workspace_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate(config_file: str | None, preset: str | None, data: str | None, labels: str | None,
             val_data: str | None, test_data: str | None, n_trials: int | None, timeout: float | None,
             parallel: int | None, backend: str | None, workspace: Workspace, as_json: bool) -> None:
    """Check a sweep without running it: the resolved config and where each value came from."""
    from engine.config import study_name
    from engine.datasets.scan import split_sizes
    from engine.insights.estimate import estimate, estimate_program
    from engine.sweep.engine import Engine
    from engine.sweep.resolve import resolve_run

    args = RunArgs(preset=preset, config_file=config_file, n_trials=n_trials, timeout=timeout, data=data,
                   labels=labels, val_data=val_data, test_data=test_data, parallel=parallel, backend=backend)
    origins: dict[str, str] = {}
    resolved = resolve_run(preset, config_file, args.flags(), origins=origins)
    config = resolved.config
    name = study_name(None, config.name, config_file)
    if resolved.batch_scale != 1.0:  # the profile scaled the batch sizes after the layers set them
        for key in ("train.batch_size", "search_space.batch_size"):
            origins[key] = f"{origins.get(key, DEFAULT)} x{resolved.batch_scale:g} (platform profile)"
    before = dict(_flat(config.to_dict()))
    engine = Engine(resolved, workspace.url, workspace.workdir, name, reporter=None)  # type: ignore[arg-type]
    found = engine.prepare(measure=False)  # every check `run` makes before it writes anything
    for key, value in _flat(config.to_dict()):
        if before.get(key) != value:  # image_size: auto, epochs from min_steps...: the notes say why
            origins[key] = f"the data (was {json.dumps(before.get(key), default=str)})"
    trials = config.budget.n_trials
    grid = _grid_points(config)
    has_db = workspace.storage is not None or (workspace.workdir / "hpo.db").exists()
    if found is None:  # a program's sweep: its command instead of data
        timing = estimate_program(workspace.url, config, trials) if has_db else None
        what: dict[str, Any] = {"program": {"command": config.objective.command, "cwd": config.objective.cwd}}
    else:
        split = split_sizes(found, config.data)
        timing = estimate(workspace.url, config, split["train"], trials) if has_db else None
        what = {"data": {"root": str(found.root), "classes": len(found.classes), **split}}
    report = {
        "config": config_file or f"preset {preset or 'quick'}", "study": name, "platform": resolved.platform,
        **what,
        "settings": [{"key": k, "value": v, "from": origins.get(k) or _origin(k, origins)}
                     for k, v in _flat(config.to_dict())],
        "search_space": {k: spec.model_dump(exclude_none=True, exclude_defaults=True)
                         for k, spec in config.search_space.items()},
        "trials": trials, "grid_points": grid,
        "objective": {"metrics": config.objective.metrics(), "directions": config.objective.directions()},
        "estimate": None if timing is None else {
            "seconds": round(timing.seconds, 1), "per_trial_s": round(timing.per_trial_s, 2),
            "from_trials": timing.trials_measured, "models": list(timing.models)},
        "notes": engine.notes,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    _show(report)


def _grid_points(config: Any) -> int | None:
    if config.sampler.name != "grid":
        return None
    from engine.config.space import grid_points

    return len(grid_points(config.search_space, config.fixed()))


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every setting but the search space (listed on its own)."""
    if isinstance(value, dict) and value and prefix != "search_space.":
        out = []
        for key, item in value.items():
            if f"{prefix}{key}" != "search_space":
                out += _flat(item, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), value)]


def _origin(key: str, origins: dict[str, str]) -> str:
    """A key no layer set itself: a layer may have set its section whole (`data: {path: ...}` sets
    `data.path`), else it is the schema's default or what the data decided (`auto`, min_steps)."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:n]) in origins:
            return origins[".".join(parts[:n])]
    return DEFAULT


def _show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{Path(report['config']).name}[/] is valid: study '{report['study']}' on "
                  f"{report['platform']}")
    if "program" in report:
        program = report["program"]
        console.print(f"program: {' '.join(program['command'])} (in {program['cwd']})", markup=False)
    else:
        data = report["data"]
        test = f", {data['test']} test" if "test" in data else ""
        console.print(f"data: {data['root']} ({data['images']} images, {data['classes']} classes: {data['train']} "
                      f"train, {data['val']} validation{test})")
    table = Table(title="settings (where each value came from)", title_justify="left")
    for column in ("key", "value", "from"):
        table.add_column(column)
    for row in report["settings"]:
        style = None if row["from"] == DEFAULT else "bold"
        table.add_row(row["key"], json.dumps(row["value"], default=str), row["from"], style=style)
    console.print(table)
    space = Table(title=f"search space ({len(report['search_space'])} parameters)", title_justify="left")
    space.add_column("parameter")
    space.add_column("range or choices")
    for key, spec in report["search_space"].items():
        space.add_row(key, ", ".join(f"{k}={v}" for k, v in spec.items()))
    console.print(space)
    grid = f" (a grid of {report['grid_points']} points)" if report["grid_points"] is not None else ""
    objective = report["objective"]
    console.print(f"trials: {report['trials']}{grid}; objective: "
                  + ", ".join(f"{d} {m}" for m, d in zip(objective["metrics"], objective["directions"], strict=True)))
    timing = report["estimate"]
    if timing is None:
        what = "this program" if "program" in report else "these models"
        console.print(f"time: no estimate yet (no finished trial of {what} in this workspace)")
    else:
        seconds = timing["seconds"]
        took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
            f"{seconds / 3600:.1f} h"
        console.print(f"time: about {took} at most ({timing['per_trial_s']:.1f} s a trial, from "
                      f"{timing['from_trials']} finished trial(s) of {', '.join(timing['models'])} here; "
                      "pruning shortens it)", markup=False)
    for note in report["notes"]:
        console.print(f"note: {note}", style="yellow")


@click.command()
@click.option("--out", metavar="FILE", callback=check_out_file, help="Write it here (default: standard output).")
def schema(out: str | None) -> None:
    """The JSON Schema of the native sweep format, for editors that check and complete YAML."""
    from engine.artifacts import write_atomic
    from engine.config.schema import SweepConfig

    document = SweepConfig.model_json_schema()
    # What a file may hold besides the config itself (`engine.config.layers`): a parent file, and
    # blocks applied per platform and when fine-tuning, each a part of a config.
    part = {"$ref": "#"}
    # `train:` holds the trainer's keys, or with a program as the objective, the program's own values
    trainer = document["properties"]["train"]
    document["properties"]["train"] = {"type": "object"}
    document["allOf"] = [{"if": {"required": ["objective"], "properties": {"objective": {"required": ["command"]}}},
                          "then": {"properties": {"train": {"description": "The program's own fixed values"}}},
                          "else": {"properties": {"train": trainer}}}]
    document["properties"] |= {
        "extends": {"type": "string", "description": "A parent sweep file, relative to this one."},
        "per_platform": {"type": "object", "propertyNames": {"enum": ["cuda", "mps", "cpu"]},
                         "additionalProperties": part},
        "when_finetuning": part,
    }
    text = json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "tui-hpo sweep",
                       **document}, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    write_atomic(Path(out), text)
    click.echo(f"wrote {out}: add `# yaml-language-server: $schema={out}` as a sweep file's first line")
