"""`tui-hpo predict` and `tui-hpo evaluate`: a model package (best_model.safetensors, a kept
checkpoint, or `tui-hpo train --out`) on new images, with optional test-time augmentation.
The inference itself is engine.training.predict."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from tui_hpo.options import check_out_file

TTA = ("none", "flip", "five-crop", "flip+scale", "auto")
SHOWN = 5  # skipped files named on the screen


def _common(command: Callable) -> Callable:
    for option in reversed((
        click.option("--model", "model_path", required=True, metavar="PACKAGE",
                     help="A model package (best_model.safetensors, checkpoints/trial_N.safetensors, "
                          "train --out) or an ensemble folder (tui-hpo ensemble)."),
        click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True, help="Images per batch."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda:N or mps."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    )):
        command = option(command)
    return command


@contextlib.contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress line on a terminal (stderr), nothing otherwise; yields `advance(n)`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda n: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _skipped_lines(skipped: list[tuple[str, str]]) -> list[str]:
    if not skipped:
        return []
    shown = "; ".join(f"{i} ({why})" for i, why in skipped[:SHOWN])
    more = f" and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
    return [f"skipped {len(skipped)} unreadable or missing image(s): {shown}{more}"]


def _labelled(package: Any, path: str, key: str) -> tuple[Any, Any, Any, list[tuple[str, str]]]:
    """(images, indices, labels, skipped) of a labelled folder or CSV whose labels are the package's classes."""
    import numpy as np

    from engine.datasets.inputs import find_inputs
    from engine.errors import UserError
    from engine.training.predict import read_images

    data, kept = read_images(find_inputs(path, key), package)
    index = {c: i for i, c in enumerate(package.classes)}
    unknown = sorted({str(t) for t in kept.labels if t not in index})
    if not kept.ids or unknown:
        said = f" (found {', '.join(unknown[:5])})" if unknown else ""
        raise UserError(f"needs images labelled with the package's classes ({', '.join(package.classes[:10])})"
                        f"{said}: an ImageFolder tree or a CSV with a label column", source=path, key=key)
    return data, np.arange(len(kept.ids)), np.array([index[t] for t in kept.labels], dtype=np.int64), kept.skipped


def _auto(model: Any, package: Any, val: str | None, device: str, batch: int) -> tuple[str, dict, str]:
    """The best TTA policy on validation images: --val, else the package's own validation split."""
    from engine.training.predict import POLICIES, best_policy, compare, own_validation

    if val is not None:
        data, idx, labels, _skipped = _labelled(package, val, "--val")
        source = val
    else:
        data, idx = own_validation(package)
        labels = data.labels.numpy()[idx]
        source = "the package's own validation split"
    with _progress("choosing TTA", len(idx) * len(POLICIES)) as advance:
        results = compare(model, package, data, idx, labels, device, POLICIES, batch, advance)
    best = best_policy(results)
    base, won = results["none"][0], results[best][0]
    others = ", ".join(f"{p} {a:.4f}" for p, (a, _f1) in results.items())
    said = (f"tta auto: {best} on {len(idx)} validation images from {source}: accuracy {won:.4f} against "
            f"{base:.4f} without TTA ({(won - base) * 100:+.2f} points; {others})")
    return best, {p: {"accuracy": a, "macro_f1": f} for p, (a, f) in results.items()}, said


def _is_ensemble(path: str) -> bool:
    from engine.training.ensemble import is_ensemble

    return is_ensemble(path)


def _predict_ensemble(path: str, inputs: Any, device: str, tta: str, batch: int, out: Path, as_json: bool) -> None:
    """An ensemble package (`tui-hpo ensemble`): each member reads the images at its own sizes,
    with its own normalisation; their probabilities are combined with the ensemble's weights."""
    import numpy as np

    from engine.errors import UserError
    from engine.training import ensemble as ens
    from engine.training.predict import Predictions, probabilities, read_images

    if tta == "auto":
        raise UserError("--tta auto chooses per model: give an ensemble none, flip or flip+scale", key="--tta")
    members = ens.load(path, device)
    probs, kept = [], None
    with _progress("predicting", len(inputs.ids) * len(members)) as advance:
        for m in members:
            data, read = read_images(inputs, m.package)
            if not read.ids:
                raise UserError(f"no readable images left; {read.skipped_summary()}", source=inputs.root,
                                key="--data")
            if kept is not None and read.ids != kept.ids:
                raise UserError("the members could not read the same images", source=inputs.root, key="--data")
            kept = read
            probs.append(probabilities(m.model, m.package, data, np.arange(len(read.ids)), device, tta, batch,
                                       advance))
    assert kept is not None
    classes = members[0].package.classes
    result = Predictions(kept.ids, classes, ens.combine(probs, [m.weight for m in members]), kept.labels,
                         kept.skipped, tta)
    result.write_csv(out)
    _report(result, as_json, {"model": path, "members": len(members), "out": str(out), "tta": tta, "device": device},
            [f"predicted {len(result.ids)} image(s) with an ensemble of {len(members)} "
             f"({', '.join(m.package.model for m in members)}; tta {tta}) on {device}: {out}"])


def _report(result: Any, as_json: bool, fields: dict[str, Any], lines: list[str]) -> None:
    """What predict says: `fields` and the figures as JSON, or `lines`, the accuracy against the
    labels the images came with (if any) and the skipped files."""
    score = result.scores()
    if as_json:
        click.echo(json.dumps({
            **fields, "images": len(result.ids), "accuracy": score[0] if score else None,
            "macro_f1": score[1] if score else None,
            "skipped": [{"id": i, "why": why} for i, why in result.skipped]}, indent=2))
        return
    for line in lines:
        click.echo(line)
    if score is not None:
        click.echo(f"  accuracy against the folder/CSV labels: {score[0]:.4f} (macro-F1 {score[1]:.4f})")
    for line in _skipped_lines(result.skipped):
        click.echo(line)


@click.command()
@_common
@click.option("--data", "data_path", required=True, metavar="PATH",
              help="A folder of images (searched recursively) or a CSV of image ids.")
@click.option("--tta", type=click.Choice(TTA), default="none", show_default=True,
              help="Test-time augmentation; auto picks the best on --val (or the package's own validation split).")
@click.option("--val", "val_path", metavar="PATH", help="With --tta auto: labelled images to choose on.")
@click.option("--out", "out_path", default="predictions.csv", show_default=True, metavar="FILE",
              callback=check_out_file, help="The predictions CSV: id, predicted class, a probability column per class.")
def predict(model_path: str, batch: int, device: str, as_json: bool, data_path: str, tta: str, val_path: str | None,
            out_path: str) -> None:
    """Predict the class of every image under PATH with a model package."""
    from engine.datasets.inputs import find_inputs
    from engine.errors import UserError
    from engine.training.package import load_package
    from engine.training.predict import predict as run_predict
    from engine.training.predict import read_images, resolve_device

    if val_path is not None and tta != "auto":
        raise UserError("--val only chooses the policy of --tta auto", key="--val")
    dev = resolve_device(device)
    inputs = find_inputs(data_path)
    if _is_ensemble(model_path):
        _predict_ensemble(model_path, inputs, dev, tta, batch, Path(out_path), as_json)
        return
    model, package = load_package(model_path, dev)
    notes, auto = [], None
    if tta == "auto":
        tta, auto, said = _auto(model, package, val_path, dev, batch)
        notes.append(said)
    read = read_images(inputs, package)
    if not read[1].ids:
        raise UserError(f"no readable images left; {read[1].skipped_summary()}", source=inputs.root, key="--data")
    with _progress("predicting", len(read[1].ids)) as advance:
        result = run_predict(model, package, inputs, dev, tta, batch, advance, read=read)
    result.write_csv(Path(out_path))
    counts: dict[str, int] = {}
    for name in result.predicted:
        counts[name] = counts.get(name, 0) + 1
    _report(result, as_json, {"model": model_path, "out": out_path, "tta": tta, "tta_auto": auto, "device": dev},
            [*notes, f"predicted {len(result.ids)} image(s) with {package.model} ({len(package.classes)} classes, "
                     f"{package.image_size} px, tta {tta}) on {dev}: {out_path}",
             "  predicted: " + ", ".join(f"{c} {counts[c]}" for c in package.classes if c in counts)])


@click.command()
@_common
@click.option("--data", "data_path", metavar="PATH",
              help="Labelled images: an ImageFolder tree, or a CSV with id and label columns (default: the "
                   "package's own validation split, and the result is kept beside the package).")
@click.option("--tta", type=click.Choice(TTA), default="flip", show_default=True,
              help="The policy compared with none; auto: every policy.")
def evaluate(model_path: str, batch: int, device: str, as_json: bool, data_path: str | None, tta: str) -> None:
    """Accuracy and macro-F1 of a model package on labelled images, with and without TTA."""
    from engine.artifacts import tta_path, write_atomic
    from engine.training.package import load_package
    from engine.training.predict import POLICIES, compare, own_validation, resolve_device

    dev = resolve_device(device)
    model, package = load_package(model_path, dev)
    if data_path is None:
        data, idx = own_validation(package)
        labels, skipped = data.labels.numpy()[idx], []
    else:
        data, idx, labels, skipped = _labelled(package, data_path, "--data")
    policies = POLICIES if tta == "auto" else tuple(dict.fromkeys(("none", tta)))
    with _progress("evaluating", len(idx) * len(policies)) as advance:
        results = compare(model, package, data, idx, labels, dev, policies, batch, advance)
    if data_path is None:  # the Analysis screen shows it (tta_path); a model on read-only media is still evaluated
        with contextlib.suppress(OSError):
            write_atomic(tta_path(model_path), json.dumps({
                "images": len(idx), "results": {p: {"accuracy": a, "macro_f1": f} for p, (a, f) in results.items()}}))
    if as_json:
        click.echo(json.dumps({"model": model_path, "images": len(idx), "device": dev,
                               "results": {p: {"accuracy": a, "macro_f1": f} for p, (a, f) in results.items()},
                               "skipped": [{"id": i, "why": w} for i, w in skipped]}, indent=2))
        return
    click.echo(f"{package.model} on {len(idx)} labelled image(s) ({dev}):")
    base = results["none"][0]
    for policy, (accuracy, f1) in results.items():
        delta = "" if policy == "none" else f"  ({(accuracy - base) * 100:+.2f} points)"
        click.echo(f"  tta {policy:11} accuracy {accuracy:.4f}  macro-F1 {f1:.4f}{delta}")
    for line in _skipped_lines(skipped):
        click.echo(line)
