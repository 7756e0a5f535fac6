"""Top-K ensembles (phase 3 of the origin documents): the kept packages of a study's best trials,
their softmax probabilities averaged (`mean`) or weighted by each member's validation macro-F1
(`weighted`). Fold ensembles: the k models one k-fold trial trained, one per fold.

A top-K ensemble is measured on the members' shared validation split. A fold ensemble cannot be:
every validation image trained all its members but one. Its members are measured out-of-fold
(each on the fold it never trained on), and the ensemble itself on `data.test` when there is one.

An ensemble package is a folder: `ensemble.json` (method, members with weights, classes) beside a
copy of each member's `.safetensors` package, so it stands alone like a single package and
`tui-hpo predict --model FOLDER` takes it. Each member reads the images at its own decode and
image size and normalises with its own statistics: members may differ in model and image size.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from engine.artifacts import user_cache_dir, write_atomic
from engine.config import DataConfig
from engine.errors import UserError
from engine.training.evaluate import test_images
from engine.training.package import Package, load_package
from engine.training.predict import own_validation, probabilities, scores
from engine.training.tensors import ImageData

MANIFEST = "ensemble.json"
METHODS = ("mean", "weighted")
FORMAT = 1


@dataclass
class Member:
    path: Path
    model: nn.Module
    package: Package
    weight: float = 1.0
    trial: int | None = None
    fold: int | None = None  # in a fold ensemble


def is_ensemble(path: str | Path) -> bool:
    path = Path(path)
    return (path / MANIFEST).is_file() if path.is_dir() else path.name == MANIFEST


def combine(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The members' probabilities, weighted and renormalised to sum to one per image."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("ensemble weights must sum to more than zero")
    return sum(w / total * p for w, p in zip(weights, probs, strict=True))  # type: ignore[return-value]


def member_weights(method: str, member_f1: list[float]) -> list[float]:
    """Equal for `mean`; each member's validation macro-F1 for `weighted` (a member at chance
    still counts a little, one that scored zero not at all)."""
    if method not in METHODS:
        raise UserError(f"unknown method '{method}' (use {', '.join(METHODS)})", key="--method")
    return [1.0] * len(member_f1) if method == "mean" else [max(0.0, f) for f in member_f1]


def check_compatible(members: list[Member]) -> None:
    """Members must predict the same classes in the same order, on the same validation split."""
    first = members[0].package
    for m in members[1:]:
        if m.package.classes != first.classes:
            raise UserError(f"{m.path.name} predicts other classes than {members[0].path.name}", key="--model")


def evaluate(members: list[Member], data_by_size: dict[int, tuple[ImageData, np.ndarray]], device: str,
             policy: str = "none") -> dict[str, Any]:
    """Each member's and the ensemble's validation (accuracy, macro-F1) on the members' shared
    validation split (its images decoded once per decode size); weights are not applied here."""
    per_member: list[np.ndarray] = []
    labels: np.ndarray | None = None
    for m in members:
        data, idx = data_by_size[m.package.decode_size]
        per_member.append(probabilities(m.model, m.package, data, idx, device, policy))
        truth = data.labels.numpy()[idx]
        if labels is not None and not np.array_equal(labels, truth):
            raise UserError("the members were validated on different images (another data config or split)",
                            key="--top")
        labels = truth
    assert labels is not None
    n = len(members[0].package.classes)
    return {"probs": per_member, "labels": labels,
            "members": [scores(p, labels, n) for p in per_member]}


def evaluate_folds(members: list[Member], device: str) -> dict[str, Any]:
    """Each fold model's (accuracy, macro-F1) on its own fold's validation images, and the
    out-of-fold figures: every image scored by the one member that never trained on it."""
    n = len(members[0].package.classes)
    probs, labels, per_member = [], [], []
    for m in members:
        data, idx = own_validation(m.package)
        p = probabilities(m.model, m.package, data, idx, device)
        truth = data.labels.numpy()[idx]
        probs.append(p)
        labels.append(truth)
        per_member.append(scores(p, truth, n))
    return {"members": per_member, "validation_images": sum(len(t) for t in labels),
            "out_of_fold": scores(np.concatenate(probs), np.concatenate(labels), n)}


def evaluate_test(members: list[Member], weights: list[float], device: str) -> dict[str, Any] | None:
    """The members and the ensemble on the sweep's `data.test` images (None without one): the one
    measure of an ensemble that no member chose or trained on."""
    first = members[0].package
    if not first.data or DataConfig.model_validate(first.data).test is None:
        return None
    cfg = DataConfig.model_validate(first.data)
    try:
        by_size = {size: test_images(cfg, next(m.package for m in members if m.package.decode_size == size),
                                     user_cache_dir() / "images")
                   for size in {m.package.decode_size for m in members}}
    except ValueError as exc:
        raise UserError(str(exc), source=str(cfg.test), key="data.test") from None
    measured = evaluate(members, by_size, device)
    together = scores(combine(measured["probs"], weights), measured["labels"], len(first.classes))
    return {"images": len(measured["labels"]), "members": measured["members"], "ensemble": together}


def write(folder: Path, members: list[Member], method: str, metrics: dict[str, Any]) -> Path:
    """The ensemble package: member files copied in, and the manifest written last (atomically),
    so a half-written folder is never taken for an ensemble."""
    folder.mkdir(parents=True, exist_ok=True)
    listed = []
    for m in members:
        name = f"member-{len(listed)}-{m.path.name}"
        shutil.copyfile(m.path, folder / name)
        listed.append({"file": name, "trial": m.trial, "fold": m.fold, "weight": m.weight, "model": m.package.model,
                       "image_size": m.package.image_size})
    manifest = {"format": FORMAT, "method": method, "classes": list(members[0].package.classes),
                "members": listed, "metrics": metrics}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return folder


def load(path: str | Path, device: str) -> list[Member]:
    """The members of an ensemble package (its folder or its ensemble.json), weights included."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        listed = manifest["members"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"not a readable ensemble ({exc.__class__.__name__})", source=str(folder),
                        key="--model") from None
    members = []
    for entry in listed:
        model, package = load_package(folder / entry["file"], device)
        members.append(Member(folder / entry["file"], model, package, float(entry.get("weight", 1.0)),
                              entry.get("trial"), entry.get("fold")))
    if not members:
        raise UserError("the ensemble lists no members", source=str(folder), key="--model")
    check_compatible(members)
    return members
