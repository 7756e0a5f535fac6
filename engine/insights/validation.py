"""Can the validation set tell trials apart? A verdict on the split a sweep validated on.

The lesson of the sweeps this tool replaced: a validation set of 30 images ranks configs by
noise, since one image more or less moves accuracy by 0.03. The engine stores the split's sizes
in the study (`tui_hpo` attribute, key `data`: engine.datasets.scan.split_sizes) at sweep start;
these plain functions judge them without reading any data or importing Optuna, so `tui-hpo
summary` and the dashboard (which never loads a Study) give the same verdict.
"""

from __future__ import annotations

import math
from typing import Any

MIN_IMAGES = 100  # fewer validation images: one image is a whole percent of the objective
MIN_PER_CLASS = 10  # fewer of one class: that class's F1 moves by 0.1 per image
ADVISED_FOLDS = 5
PROPORTIONS = ("val_f1", "val_accuracy")  # objectives on the 0..1 scale of a share of images


def class_range(data: dict[str, Any]) -> tuple[int, int] | None:
    """The smallest and largest class count of one fold's validation set (None without counts)."""
    counts = list((data.get("val_counts") or {}).values())
    return (min(counts), max(counts)) if counts else None


def validated(data: dict[str, Any]) -> tuple[int, int | None]:
    """How many images, and how many of the rarest class, the objective is measured on. With k
    folds a trial's value is the mean over its folds, so every image is validated once: k times
    the first fold's figures (what `data.folds` buys, and why the advice names it)."""
    folds = max(1, int(data.get("folds") or 1))
    span = class_range(data)
    return int(data["val"]) * folds, span[0] * folds if span else None


def too_small(data: dict[str, Any] | None) -> bool:
    """Whether differences between trials are within the noise of the validation set's size."""
    if not data:
        return False
    images, rarest = validated(data)
    return images < MIN_IMAGES or (rarest is not None and rarest < MIN_PER_CLASS)


def standard_error(p: float, n: int) -> float:
    """The standard error of a proportion p measured on n images: how far the objective of one
    config moves between two equally good draws of the validation set."""
    return math.sqrt(p * (1 - p) / n) if n > 0 else math.inf


def judge(data: dict[str, Any] | None, best: float | None, metric: str | None) -> dict[str, Any] | None:
    """The validation set's size, class balance and the objective's noise at that size, with a
    warning when it is too small to rank configs; None for a study without stored sizes.

    The noise is taken at the best value when the objective is a share of images (F1, accuracy);
    otherwise (no completed trial, a loss, several objectives) at p=0.5, the most it can be."""
    if not data:
        return None
    images = validated(data)[0]
    p = float(best) if best is not None and metric in PROPORTIONS and 0.0 <= best <= 1.0 else 0.5
    noise = standard_error(p, images)
    span = class_range(data)
    folds = max(1, int(data.get("folds") or 1))
    warning = None
    if too_small(data):
        size = f"{data['val']} images" if folds == 1 else f"{folds} folds of {data['val']} images"
        per_class = f" ({span[0]} per class at least)" if span else ""
        advice = f"use data.folds: {ADVISED_FOLDS} or more data" if folds < ADVISED_FOLDS else "use more data"
        warning = (f"validation set of {size}{per_class}: differences below ~{rough(noise)} between trials "
                   f"are noise; {advice}")
    return {"images": int(data["val"]), "folds": folds, "classes": len(data.get("val_counts") or {}),
            "smallest_class": span[0] if span else None, "largest_class": span[1] if span else None,
            "noise": round(noise, 4), "noise_at": round(p, 4), "warning": warning}


def balance(data: dict[str, Any], unit: str, spell_out: int = 0) -> str:
    """One fold's validation counts per class, compactly: each count (`18/18/18`) for up to
    `spell_out` classes, so a short one shows; otherwise the range with its unit (`13-18/class`,
    `18 per class` when all are equal). Empty without counts."""
    counts = list((data.get("val_counts") or {}).values())
    if not counts:
        return ""
    if len(counts) <= spell_out:
        return "/".join(str(c) for c in counts)
    low, high = min(counts), max(counts)
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def rough(value: float) -> str:
    """A noise figure to the precision it deserves: 0.05, 0.003."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1g}"
