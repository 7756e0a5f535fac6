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
from tui_hpo.options import check_out_dir, study_options

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
@click.option("--folds", is_flag=True,
              help="Members: the fold models of one k-fold trial (the best, or --trial) instead of the best K trials.")
@click.option("--trial", "trial_number", type=click.IntRange(min=0),
              help="With --folds: the trial (default: the best).")
@click.option("--method", type=click.Choice(METHODS), default="mean", show_default=True,
              help="mean: equal weights; weighted: by each member's validation macro-F1.")
@click.option("--out", "out_dir", metavar="DIR", callback=check_out_dir,
              help="The ensemble package folder (default: DIR/<study>/ensemble).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda:N or mps.")
def ensemble(workspace: Workspace, study_name: str | None, as_json: bool, top: int, folds: bool,
             trial_number: int | None, method: str, out_dir: str | None, device: str) -> None:
    """Combine the kept models of the best K trials (or one k-fold trial's folds), measure the
    ensemble against its members, and write it as a package `predict` takes."""
    from engine.errors import UserError
    from engine.training import ensemble as ens
    from engine.training.predict import own_validation, resolve_device, scores

    if trial_number is not None and not folds:
        raise UserError("--trial picks the trial whose folds to combine: add --folds", key="--trial")
    study = study_from(workspace, study_name)
    folder = study_folder(workspace, study.study_name)
    dev = resolve_device(device)
    members, notes = _fold_members(study, folder, trial_number, dev) if folds else _top_members(study, folder, top, dev)
    ens.check_compatible(members)
    n = len(members[0].package.classes)
    report: dict[str, Any] = {"study": study.study_name, "method": method, "kind": "folds" if folds else "top"}
    if folds:
        measured = ens.evaluate_folds(members, dev)
        together = None
        report["out_of_fold"] = dict(zip(("accuracy", "macro_f1"), measured["out_of_fold"], strict=True))
        notes.append("each validation image trained every fold model but one: the ensemble itself is measured on "
                     "data.test only")
    else:
        data_by_size = {}
        for m in members:
            if m.package.decode_size not in data_by_size:
                data_by_size[m.package.decode_size] = own_validation(m.package)
        measured = ens.evaluate(members, data_by_size, dev)
        measured["validation_images"] = len(measured["labels"])
    weights = ens.member_weights(method, [f1 for _acc, f1 in measured["members"]])
    for m, w in zip(members, weights, strict=True):
        m.weight = w
    if not folds:
        together = scores(ens.combine(measured["probs"], weights), measured["labels"], n)
    best = max(range(len(members)), key=lambda i: measured["members"][i][1])
    report |= {
        "validation_images": measured["validation_images"],
        "members": [{"trial": m.trial, "fold": m.fold, "model": m.package.model, "accuracy": acc, "macro_f1": f1,
                     "weight": m.weight} for m, (acc, f1) in zip(members, measured["members"], strict=True)],
        "ensemble": None if together is None else {"accuracy": together[0], "macro_f1": together[1]},
        "best_single": {"trial": members[best].trial, "fold": members[best].fold,
                        "accuracy": measured["members"][best][0], "macro_f1": measured["members"][best][1]},
    }
    tested = ens.evaluate_test(members, weights, dev)
    if tested is not None:
        report["test"] = {"images": tested["images"],
                          "members": [dict(zip(("accuracy", "macro_f1"), s, strict=True)) for s in tested["members"]],
                          "ensemble": dict(zip(("accuracy", "macro_f1"), tested["ensemble"], strict=True))}
    elif folds:
        notes.append("no data.test in the sweep's config: the fold ensemble is written unmeasured")
    report["notes"] = notes
    out = Path(out_dir) if out_dir else folder / "ensemble"
    kept = ("kind", "ensemble", "best_single", "out_of_fold", "test")
    report["package"] = str(ens.write(out, members, method, {k: report[k] for k in kept if k in report}))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _show(report)


def _top_members(study: Any, folder: Path, top: int, device: str) -> tuple[list[Any], list[str]]:
    """The kept models of the best `top` trials, and a note when fewer were kept."""
    from engine.errors import UserError
    from engine.sweep.checkpoints import path_of
    from engine.training import ensemble as ens
    from engine.training.package import load_package

    wanted = _ranked(study)[:top]
    kept = [(t, path_of(folder, t.number)) for t in wanted if path_of(folder, t.number).is_file()]
    notes = []
    if len(kept) < len(wanted):
        notes.append(f"only {len(kept)} of the best {len(wanted)} trials kept their weights (checkpoints.keep): "
                     f"set checkpoints.keep: {top} for a full top-{top} ensemble")
    if len(kept) < 2:
        raise UserError(f"needs the kept weights of two of the best {top} trials, found {len(kept)}: set "
                        f"checkpoints.keep: {top} in the config and run the sweep again", key="--top")
    return [ens.Member(path, *load_package(path, device), trial=trial.number) for trial, path in kept], notes


def _fold_members(study: Any, folder: Path, number: int | None, device: str) -> tuple[list[Any], list[str]]:
    """The fold models of trial `number` (default: the best), in fold order."""
    from engine.errors import UserError
    from engine.sweep.checkpoints import trial_files
    from engine.training import ensemble as ens
    from engine.training.package import load_package

    ranked = _ranked(study)
    if number is None:
        if not ranked:
            raise UserError("the study has no completed trial", key="--folds")
        number = ranked[0].number
    paths = [p for p in trial_files(folder, number) if p.is_file()]
    if len(paths) < 2:
        raise UserError(f"trial {number} kept no fold models: --folds needs a k-fold sweep (data.folds >= 2) whose "
                        "trial is among the kept checkpoints (checkpoints.keep)", key="--folds")
    return [ens.Member(path, *load_package(path, device), trial=number, fold=fold)
            for fold, path in enumerate(paths)], []


def _name(member: dict[str, Any], kind: str) -> str:
    return f"fold {member['fold'] + 1}" if kind == "folds" else f"trial {member['trial']}"


def _show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    kind, members, test = report["kind"], report["members"], report.get("test")
    title = (f"{len(members)}-fold ensemble of trial {members[0]['trial']}" if kind == "folds"
             else f"Top-{len(members)} ensemble") + f" of '{report['study']}' ({report['method']})"
    where = " (each fold model on the fold it never trained on)" if kind == "folds" else ""
    table = Table(title=f"{title}, {report['validation_images']} validation images{where}", title_justify="left")
    columns = ("", "model", "val acc", "val F1", "weight", *(("test acc", "test F1") if test else ()))
    for column in columns:
        table.add_column(column, justify="left" if column in ("", "model") else "right")
    for i, m in enumerate(members):
        cells = [_name(m, kind), m["model"], f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['weight']:.3g}"]
        if test:
            cells += [f"{test['members'][i]['accuracy']:.4f}", f"{test['members'][i]['macro_f1']:.4f}"]
        table.add_row(*cells)
    e = report["ensemble"] or report.get("out_of_fold")
    row = ["ensemble" if report["ensemble"] else "out-of-fold", "", f"{e['accuracy']:.4f}", f"{e['macro_f1']:.4f}", ""]
    if test:
        row += [f"{test['ensemble']['accuracy']:.4f}", f"{test['ensemble']['macro_f1']:.4f}"]
    table.add_row(*row, style="bold")
    console = Console()
    console.print(table)
    single = report["best_single"]
    if report["ensemble"]:
        console.print(_verdict(report["ensemble"]["macro_f1"], single["macro_f1"], f"the best single model's (trial "
                                                                                   f"{single['trial']}", "validation"))
    if test:
        at = max(range(len(members)), key=lambda i: test["members"][i]["macro_f1"])
        console.print(_verdict(test["ensemble"]["macro_f1"], test["members"][at]["macro_f1"],
                               f"the best member's ({_name(members[at], kind)}", f"{test['images']} test"))
    for note in report["notes"]:
        console.print(f"note: {note}", style="yellow")
    console.print(f"ensemble package: {report['package']} (tui-hpo predict --model {report['package']} --data PATH)")


def _verdict(together: float, single: float, whom: str, images: str) -> str:
    gain = together - single
    verdict = "better than" if gain > 0 else "no better than" if gain == 0 else "worse than"
    return (f"the ensemble's macro-F1 {together:.4f} is {verdict} {whom}, {single:.4f}, {gain * 100:+.2f} points) on "
            f"the same {images} images")
