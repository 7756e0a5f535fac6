"""Trial checkpoints in `DIR/<study>/checkpoints/trial_<n>.safetensors`: the best K kept, within a disk
budget. Each is a model package (`engine.training.package`): weights, classes, image size and
normalisation, loadable by `tui-hpo predict` or plain safetensors + timm.

Which checkpoints to keep is decided from the trials' values in the storage, which is the truth
about the study; the files carry no index of their own that a crash could leave stale.
`best_model.safetensors` is a hard link to the best kept checkpoint (a copy where links are not
supported), so it costs no extra disk. Workers on one machine share the folder under a file lock.

A k-fold trial's checkpoint is its last fold's model; the other folds' lie beside it as
`trial_<n>.fold_<k>.safetensors` (`tui-hpo ensemble --folds`), kept, counted and removed with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from engine.artifacts import write_atomic

FOLDER = "checkpoints"
BEST = "best_model.safetensors"
SUFFIX = ".safetensors"
NAME = re.compile(r"trial_(\d+)\.safetensors")
FOLD_NAME = re.compile(r"trial_(\d+)\.fold_(\d+)\.safetensors")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FOLDER).mkdir(parents=True, exist_ok=True)
    with open(folder / FOLDER / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def path_of(folder: Path, number: int) -> Path:
    return folder / FOLDER / f"trial_{number}{SUFFIX}"


def fold_path(folder: Path, number: int, fold: int) -> Path:
    return folder / FOLDER / f"trial_{number}.fold_{fold}{SUFFIX}"


def fold_files(folder: Path) -> dict[int, list[Path]]:
    """Trial number -> its other folds' checkpoint files (fold order), for the files that are there."""
    found: dict[int, list[tuple[int, Path]]] = {}
    for path in (folder / FOLDER).glob(f"trial_*.fold_*{SUFFIX}"):
        match = FOLD_NAME.fullmatch(path.name)
        if match:
            found.setdefault(int(match.group(1)), []).append((int(match.group(2)), path))
    return {n: [p for _k, p in sorted(paths)] for n, paths in found.items()}


def trial_files(folder: Path, number: int) -> list[Path]:
    """All of trial `number`'s checkpoint files: its other folds' first, its checkpoint last."""
    return [*fold_files(folder).get(number, []), path_of(folder, number)]


def sizes(folder: Path, files: dict[int, Path]) -> dict[int, int]:
    """Trial number -> the bytes its checkpoint takes, its other folds' files included."""
    folds = fold_files(folder)
    return {n: p.stat().st_size + sum(f.stat().st_size for f in folds.get(n, [])) for n, p in files.items()}


def on_disk(folder: Path) -> dict[int, Path]:
    """Trial number -> checkpoint file, for the files that are there."""
    found = {}
    for path in (folder / FOLDER).glob(f"trial_*{SUFFIX}"):
        match = NAME.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def ranked(values: dict[int, float], maximize: bool) -> list[int]:
    """Trial numbers, best first (ties: the earlier trial first)."""
    return sorted(values, key=lambda n: (-values[n] if maximize else values[n], n))


def plan(values: dict[int, float], sizes: dict[int, int], maximize: bool, keep: int,
         budget_mb: float | None) -> list[int]:
    """The checkpoints to keep, best first: the best `keep` with a value, fewer if the disk budget
    is exceeded, but never fewer than the best one (a budget smaller than one checkpoint keeps it)."""
    kept = [n for n in ranked({n: v for n, v in values.items() if n in sizes}, maximize)][:keep]
    if budget_mb is not None:
        budget = budget_mb * 1024 * 1024
        while len(kept) > 1 and sum(sizes[n] for n in kept) > budget:
            kept.pop()
    return kept


def save(folder: Path, number: int, weights: Callable[[], list[bytes]],
         values_of: Callable[[Iterable[int]], dict[int, float]], maximize: bool, keep: int,
         budget_mb: float | None) -> bool:
    """Keep trial `number`'s weights if they rank among the best `keep` of the checkpoints on disk
    (`values_of` gives completed trials' first-objective values from the storage); then trim the
    others. `weights` serialises the model, one package per fold (the last is the checkpoint), and
    is only called for a checkpoint that is kept. True when the files were written."""
    if keep < 1:
        return False
    with locked(folder):
        files = on_disk(folder)
        values = values_of([*files, number])
        if number not in ranked(values, maximize)[:keep]:
            return False
        data = weights()
        taken = sizes(folder, files) | {number: sum(len(d) for d in data)}
        if number not in plan(values, taken, maximize, keep, budget_mb):
            return False
        for fold, fold_data in enumerate(data[:-1]):  # the checkpoint last: it is what says "kept"
            write_atomic(fold_path(folder, number, fold), fold_data)
        write_atomic(path_of(folder, number), data[-1])
        trim(folder, values, maximize, keep, budget_mb)
    return True


def trim(folder: Path, values: dict[int, float], maximize: bool, keep: int, budget_mb: float | None) -> list[Path]:
    """Delete the checkpoints `plan` does not keep (and those of trials without a value: failed,
    pruned or gone from the storage), and point best_model.safetensors at the best kept one. The caller
    holds the lock. Returns the files removed."""
    files = on_disk(folder)
    kept = plan(values, sizes(folder, files), maximize, keep, budget_mb) if keep > 0 else []
    removed = []
    for number, paths in fold_files(folder).items():  # other folds' files go with their checkpoint
        if number not in kept:
            for path in paths:
                path.unlink(missing_ok=True)
                removed.append(path)
    for number, path in files.items():
        if number not in kept:
            path.unlink(missing_ok=True)
            removed.append(path)
    best = folder / BEST
    if kept:
        _link(files[kept[0]], best)
    elif best.exists() and files:
        best.unlink()
        removed.append(best)
    return removed


def _link(source: Path, target: Path) -> None:
    """Make `target` the same file as `source`, replacing it in one step."""
    if target.exists() and os.path.samefile(source, target):
        return
    tmp = target.with_name(f".{target.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a filesystem without hard links: copy
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
