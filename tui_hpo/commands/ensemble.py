"""`tui-hpo ensemble`: the kept models of a study's best K trials as one ensemble, measured on the
validation split against the best single model and each member, and written as an ensemble
package that `tui-hpo predict` takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.storage import Workspace
from tui_hpo.commands.study import study_folder, study_from
from tui_hpo.options import study_options

METHODS = ("mean", "weighted")


def _ranked(study: Any) -> list[Any]:
    """Completed trials, best first (a single objective only)."""
    import optuna

    from engine.errors import UserError

    if len(study.directions) != 1:
        raise UserError("an ensemble ranks trials by one objective: this study has several", key="--study")
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=maximize)


@click.command()
@study_options
@click.option("--top", type=click.IntRange(min=2), default=5, show_default=True, help="Members: the best K trials.")
@click.option("--method", type=click.Choice(METHODS), default="mean", show_default=True,
              help="mean: equal weights; weighted: by each member's validation macro-F1.")
@click.option("--out", "out_dir", metavar="DIR", help="The ensemble package folder (default: DIR/<study>/ensemble).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda:N or mps.")
def ensemble(workspace: Workspace, study_name: str | None, as_json: bool, top: int, method: str,
             out_dir: str | None, device: str) -> None:
    """Combine the kept models of the best K trials and measure the ensemble on validation."""
    from engine.errors import UserError
    from engine.sweep.checkpoints import path_of
    from engine.training import ensemble as ens
    from engine.training.package import load_package
    from engine.training.predict import own_validation, resolve_device, scores

    study = study_from(workspace, study_name)
    folder = study_folder(workspace, study.study_name)
    wanted = _ranked(study)[:top]
    kept = [(t, path_of(folder, t.number)) for t in wanted if path_of(folder, t.number).is_file()]
    notes = []
    if len(kept) < len(wanted):
        notes.append(f"only {len(kept)} of the best {len(wanted)} trials kept their weights (checkpoints.keep): "
                     f"set checkpoints.keep: {top} for a full top-{top} ensemble")
    if len(kept) < 2:
        raise UserError(f"needs the kept weights of two of the best {top} trials, found {len(kept)}: set "
                        f"checkpoints.keep: {top} in the config and run the sweep again", key="--top")
    dev = resolve_device(device)
    members = [ens.Member(path, *load_package(path, dev), trial=trial.number) for trial, path in kept]
    ens.check_compatible(members)
    data_by_size = {}
    for m in members:
        if m.package.decode_size not in data_by_size:
            data_by_size[m.package.decode_size] = own_validation(m.package)
    measured = ens.evaluate(members, data_by_size, dev)
    weights = ens.member_weights(method, [f1 for _acc, f1 in measured["members"]])
    for m, w in zip(members, weights, strict=True):
        m.weight = w
    together = scores(ens.combine(measured["probs"], weights), measured["labels"], len(members[0].package.classes))
    best = max(range(len(members)), key=lambda i: measured["members"][i][1])
    report = {
        "study": study.study_name, "method": method, "validation_images": len(measured["labels"]),
        "members": [{"trial": m.trial, "model": m.package.model, "accuracy": acc, "macro_f1": f1, "weight": m.weight}
                    for m, (acc, f1) in zip(members, measured["members"], strict=True)],
        "ensemble": {"accuracy": together[0], "macro_f1": together[1]},
        "best_single": {"trial": members[best].trial, "accuracy": measured["members"][best][0],
                        "macro_f1": measured["members"][best][1]},
        "notes": notes,
    }
    out = Path(out_dir) if out_dir else folder / "ensemble"
    report["package"] = str(ens.write(out, members, method, {k: report[k] for k in ("ensemble", "best_single")}))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _show(report)


def _show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Top-{len(report['members'])} ensemble of '{report['study']}' ({report['method']}), "
                        f"{report['validation_images']} validation images", title_justify="left")
    for column in ("", "model", "accuracy", "macro-F1", "weight"):
        table.add_column(column, justify="left" if column in ("", "model") else "right")
    for m in report["members"]:
        table.add_row(f"trial {m['trial']}", m["model"], f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}",
                      f"{m['weight']:.3g}")
    e = report["ensemble"]
    table.add_row("ensemble", "", f"{e['accuracy']:.4f}", f"{e['macro_f1']:.4f}", "", style="bold")
    console = Console()
    console.print(table)
    single = report["best_single"]
    gain = e["macro_f1"] - single["macro_f1"]
    verdict = ("better than" if gain > 0 else "no better than" if gain == 0 else "worse than")
    console.print(f"the ensemble's macro-F1 {e['macro_f1']:.4f} is {verdict} the best single model's "
                  f"(trial {single['trial']}, {single['macro_f1']:.4f}, {gain * 100:+.2f} points) on the same "
                  "validation images")
    for note in report["notes"]:
        console.print(f"note: {note}", style="yellow")
    console.print(f"ensemble package: {report['package']} (tui-hpo predict --model {report['package']} --data PATH)")
