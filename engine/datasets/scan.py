"""Datasets: the embedded digits, ImageFolder trees and CSV label files; splits.

`scan()` needs no torch: it finds the layout, the classes and the usable files, and reports
what it skipped (broken, not an image, missing, or outside the data root: never opened). The
engine process calls it to reject bad input before a study exists; each worker calls it again
(it is deterministic) and then reads the decoded images from the workspace's image cache
(`engine.datasets.image_cache`, filled by the first worker that needs it).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DataConfig
from engine.errors import DataError, one_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_IMAGE_BYTES = 256 * 2**20  # a "photo" larger than this is not one we can cache; skip it
SKIP_EXAMPLES = 5

# Header names that say "the image" and "its class", compared without case, spaces, underscores
# and hyphens (`Image ID`, `file_name`): the columns of common exports and public datasets
# (`filename,category`, Kaggle's `id,breed`, HAM10000's `image_id,dx`), so most CSVs need no setting.
ID_NAMES = frozenset({
    "id", "image", "imageid", "img", "imgid", "file", "filename", "filepath", "path", "imagepath", "imagefile",
    "imagename", "imgpath", "imgfile", "imgname", "name", "fname", "photo", "picture",
})
LABEL_NAMES = frozenset({
    "label", "labels", "labelname", "labelid", "target", "targets", "class", "classes", "classname", "classlabel",
    "classid", "category", "categoryname", "categoryid", "y", "species", "breed", "dx", "diagnosis",
})
ROLE_NAMES = {"id": ID_NAMES, "label": LABEL_NAMES}
ROLE_KEYS = {"id": "data.id_column", "label": "data.label_column"}
ROLE_FLAGS = {"id": "--id-column", "label": "--label-column"}
ROLE_WHAT = {"id": "the image ids", "label": "the labels"}
SNIFF_ROWS = 20  # rows whose first column must all be image file names to take a two-column file by position
# How a column was chosen, as the user is shown it
SET, NAMED, OTHER, POSITION = "as set", "recognised by name", "the other column", "two columns, file names first"


TRAIN, VAL, TEST = "train", "val", "test"  # an entry's part: `data.path`, `data.val` or `data.test`
PART_KEYS = {VAL: "data.val", TEST: "data.test"}


@dataclass(frozen=True)
class Entry:
    path: Path
    label: int
    part: str = TRAIN


@dataclass(frozen=True)
class Columns:
    """The labels CSV's columns a scan used, and how each was chosen: shown to the user, so that a
    recognised column can be checked before a sweep trains on it."""

    file: str  # the labels file's name
    id: str
    label: str
    how: tuple[str, str]  # (id, label): SET, NAMED, OTHER or POSITION

    def __str__(self) -> str:
        id_how, label_how = self.how
        if id_how == label_how:
            return one_line(f"{self.file}: id column '{self.id}', label column '{self.label}' ({id_how})")
        return one_line(f"{self.file}: id column '{self.id}' ({id_how}), label column '{self.label}' ({label_how})")


@dataclass
class Scan:
    """What a data path holds. `entries` is empty for the embedded digits."""

    layout: str  # "digits", "imagefolder" or "csv"
    root: str
    classes: list[str]
    entries: list[Entry] = field(default_factory=list)
    # (path, reason); the path printable (`one_line`): it goes to the log, the database and the screen
    skipped: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0
    columns: Columns | None = None  # the CSV layout's

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount([e.label for e in self.entries], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def skipped_summary(self) -> str | None:
        if not self.skipped:
            return None
        shown = "; ".join(f"{p} ({why})" for p, why in self.skipped[:SKIP_EXAMPLES])
        more = f" and {len(self.skipped) - SKIP_EXAMPLES} more" if len(self.skipped) > SKIP_EXAMPLES else ""
        return f"skipped {len(self.skipped)} file(s): {shown}{more}"


# ---------------------------------------------------------------- embedded digits


def digits_file() -> Path:
    """scikit-learn ships the UCI handwritten digits as a gzipped CSV inside the package."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the embedded dataset needs scikit-learn (pip install scikit-learn)", key="data.path")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 real 8x8 grayscale digits as uint8 (N, 8, 8) scaled to 0..255, and int64 labels."""
    with gzip.open(digits_file(), "rb") as fh:
        table = np.loadtxt(io.TextIOWrapper(fh, encoding="ascii"), delimiter=",")
    pixels = np.clip(table[:, :-1] * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return pixels.reshape(-1, 8, 8), table[:, -1].astype(np.int64)


# ---------------------------------------------------------------- scanning user data


def scan(cfg: DataConfig) -> Scan:
    """What `data.path` holds, and with `data.val` / `data.test` their images too, as entries of
    one scan (`Entry.part` says which; their labels index the training data's classes), so the
    image cache and the tensors treat them as one dataset and `splits` cuts them by part."""
    found = _scan_one(cfg)
    for part in (VAL, TEST):
        path = getattr(cfg, part)
        if path is not None:
            _add_part(found, cfg, part, path)
    return found


def _add_part(found: Scan, cfg: DataConfig, part: str, path: str) -> None:
    """Scan `path` (a folder or labels CSV, as `data.path`) and add its images to `found` as
    `part`: refused in one line (key data.val / data.test) when it has a class the training data
    has not, or shares a file with it."""
    key = PART_KEYS[part]
    if found.layout == "digits":
        raise DataError("a validation or test set of your own needs your own training data (data.path)", key=key)
    try:  # its own labels CSV, if any, is found as for data.path: `data.labels` names the training one
        other = _scan_one(cfg.model_copy(update={"path": path, "labels": None, "val": None, "test": None}),
                          min_classes=1)
    except DataError as exc:
        raise DataError(exc.detail, source=exc.source, key=key) from None
    unknown = [c for c in other.classes if c not in found.classes]
    if unknown:
        raise DataError(f"class(es) {', '.join(unknown[:5])} not in the training data (its classes: "
                        f"{_listed(found.classes)})", source=other.root, key=key)
    taken = {e.path for e in found.entries}
    shared = [e.path for e in other.entries if e.path in taken]
    if shared:
        raise DataError(f"{len(shared)} image(s) are also in the training data or data.val (e.g. "
                        f"{one_line(str(shared[0]))}): keep the sets apart", source=other.root, key=key)
    index = {c: i for i, c in enumerate(found.classes)}
    found.entries += [Entry(e.path, index[other.classes[e.label]], part) for e in other.entries]
    found.skipped += [(f"{part}: {p}", why) for p, why in other.skipped]
    found.count = len(found.entries)


def labels_csv_in(root: Path, key: str) -> Path | None:
    """The one CSV at the top of folder `root`, which makes it the CSV layout (training and
    predict read a folder the same way); None for an ImageFolder tree; several are refused."""
    csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if len(csvs) > 1:
        names = ", ".join(p.name for p in csvs)
        raise DataError(f"several CSV files ({names}): name one with --labels", source=str(root), key=key)
    return csvs[0] if csvs else None


def _scan_one(cfg: DataConfig, min_classes: int = 2) -> Scan:
    if cfg.path is None:
        if cfg.labels is not None:
            raise DataError("a labels CSV needs a data path (--data DIR)", key="data.labels")
        _pixels, labels = load_digits()
        return Scan(layout="digits", root="embedded:digits", classes=[str(i) for i in range(10)],
                    count=len(labels))
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise DataError("no such file or folder", source=str(root), key="data.path")
    labels = Path(cfg.labels).expanduser() if cfg.labels else None
    if labels is None and root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError("must be a folder of images or a labels CSV", source=str(root), key="data.path")
        labels, root = root, root.parent
    if labels is None:
        labels = labels_csv_in(root, "data.labels")
    result = _scan_csv(root, labels, cfg) if labels is not None else _scan_imagefolder(root)
    if not result.entries:
        why = f"; {result.skipped_summary()}" if result.skipped else ""
        raise DataError(f"no usable images found{why}", source=str(root), key="data.path")
    counts = result.class_counts()
    if sum(1 for n in counts.values() if n) < min_classes:
        raise DataError(f"only one class with images ({', '.join(k for k, n in counts.items() if n)}): "
                        "a classifier needs at least two", source=str(root), key="data.path")
    result.count = len(result.entries)
    return result


def _check_image(path: Path, root: Path) -> str | None:
    """Why a file cannot be used, or None. Files outside `root` are never opened."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "missing"
    if not resolved.is_relative_to(root):
        return "outside the data folder"
    if not resolved.is_file():
        return "not a file"
    size = resolved.stat().st_size
    if size == 0:
        return "empty"
    if size > MAX_IMAGE_BYTES:
        return f"too large ({size / 2**20:.0f} MB)"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(resolved) as image:
            image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return "not an image"
    except Exception as exc:  # truncated, corrupt header, ...: report, never fatal
        return f"unreadable ({exc.__class__.__name__})"
    return None


def _scan_imagefolder(root: Path) -> Scan:
    root = root.resolve()
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError("no class folders (expected DIR/<class>/<image>, or a labels CSV)",
                        source=str(root), key="data.path")
    classes, entries, skipped = [], [], []
    for class_dir in class_dirs:
        # rglob does not descend into linked folders: list them, to say so
        files = sorted(p for p in class_dir.rglob("*")
                       if not p.name.startswith(".") and (p.is_symlink() or not p.is_dir()))
        label = len(classes)
        found = False
        for path in files:
            rel = one_line(str(path.relative_to(root)))
            if path.is_dir():
                inside = path.resolve().is_relative_to(root)
                skipped.append((rel, "linked folder, not followed" if inside else "outside the data folder"))
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((rel, "not an image"))
                continue
            problem = _check_image(path, root)
            if problem:
                skipped.append((rel, problem))
            else:
                entries.append(Entry(path.resolve(), label))
                found = True
        if found:
            classes.append(class_dir.name)
    return Scan(layout="imagefolder", root=str(root), classes=classes, entries=entries, skipped=skipped)


def _image_folder_for(root: Path, labels: Path) -> Path:
    """Images beside the CSV: the data folder itself, or its only subfolder."""
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir() if p.is_file()):
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1:
        return subdirs[0]
    if not subdirs:
        raise DataError(f"no image folder beside {labels.name}", source=str(root), key="data.path")
    names = ", ".join(sorted(p.name for p in subdirs))
    raise DataError(f"several folders ({names}) beside {labels.name}: point --data at the image folder",
                    source=str(root), key="data.path")


def _csv_rows(path: Path) -> Iterable[tuple[int, list[str] | None, str | None]]:
    """(line, row, error) for each row; a malformed row is reported, not fatal."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, None, str(exc)
                continue
            yield reader.line_num, row, None


def _scan_csv(root: Path, labels: Path, cfg: DataConfig) -> Scan:
    if not labels.exists():
        raise DataError("no such labels file", source=str(labels), key="data.labels")
    if not labels.is_file():  # a folder, /dev/zero, a FIFO
        raise DataError("is not a regular file", source=str(labels), key="data.labels")
    images = _image_folder_for(root, labels).resolve()
    rows = _csv_rows(labels)
    first = next(rows, None)
    if first is None or first[1] is None:
        raise DataError("empty or unreadable header", source=str(labels), key="data.labels")
    header = [h.strip().lstrip("\ufeff") for h in first[1]]
    head = list(islice(rows, SNIFF_ROWS))
    first_values = [row[0].strip() for _line, row, _error in head if row and row[0].strip()]
    columns = _columns(header, cfg, labels, first_values)
    id_at, label_at = header.index(columns.id), header.index(columns.label)
    pairs, skipped, seen = [], [], set()
    for line, row, error in chain(head, rows):
        if row is None:
            skipped.append((f"{labels.name}:{line}", f"malformed row ({error})"))
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(id_at, label_at):
            skipped.append((f"{labels.name}:{line}", "too few columns"))
            continue
        image_id, label = row[id_at].strip(), row[label_at].strip()
        shown = one_line(image_id[:80])
        if image_id in seen:
            skipped.append((shown, "duplicate id"))
            continue
        seen.add(image_id)
        path = _resolve_id(images, image_id)
        if path is None:
            skipped.append((shown, "outside the data folder"))
            continue
        problem = _check_image(path, images)
        if problem:
            skipped.append((shown, problem))
            continue
        pairs.append((path.resolve(), label))
    classes = sorted({label for _path, label in pairs}, key=_natural_key)
    index = {c: i for i, c in enumerate(classes)}
    entries = [Entry(path, index[label]) for path, label in pairs]
    return Scan(layout="csv", root=str(images), classes=classes, entries=entries, skipped=skipped, columns=columns)


def _columns(header: list[str], cfg: DataConfig, labels: Path, first_values: list[str]) -> Columns:
    """The id and label columns: the ones the config names, else the ones whose names say so,
    else, in a two-column file, by position. Never a guess between candidates: an ambiguous file
    is refused with the setting that resolves it."""
    chosen: dict[str, tuple[str, str]] = {}  # role -> (column, how)
    for role, column in (("id", cfg.id_column), ("label", cfg.label_column)):
        if column is not None:
            if column not in header:
                raise DataError(f"no column '{column}' (columns: {_listed(header)})", source=str(labels),
                                key=ROLE_KEYS[role])
            chosen[role] = (column, SET)
    taken = {column for column, _how in chosen.values()}
    candidates = {role: [h for h in header if _normal(h) in names and h not in taken]
                  for role, names in ROLE_NAMES.items() if role not in chosen}
    chosen |= {role: (found[0], NAMED) for role, found in candidates.items() if len(found) == 1}
    if len(chosen) < 2 and len(header) == 2:
        chosen |= _by_position(header, chosen, first_values)
    for role in ROLE_NAMES:
        if role not in chosen:
            raise _unrecognised(role, candidates[role], header, labels)
    (id_column, id_how), (label_column, label_how) = chosen["id"], chosen["label"]
    return Columns(labels.name, id_column, label_column, (id_how, label_how))


def _normal(name: str) -> str:
    """`Image ID`, `image_id` and `image-id` are one name."""
    return re.sub(r"[\s_-]", "", name).casefold()


def _by_position(header: list[str], chosen: dict[str, tuple[str, str]],
                 first_values: list[str]) -> dict[str, tuple[str, str]]:
    """The roles a two-column file settles by position: once one column is known the other is the
    other; with neither, the first is the id only if its values are image file names
    (`cat1.jpg,tabby`), since two columns of numbers or words could be either way round."""
    if len(chosen) == 1:
        [(role, (column, _how))] = chosen.items()
        others = [h for h in header if h != column]
        other_role = "label" if role == "id" else "id"
        return {other_role: (others[0], OTHER)} if len(others) == 1 else {}
    if header[0] != header[1] and first_values and all(Path(v).suffix.lower() in IMAGE_SUFFIXES
                                                       for v in first_values):
        return {"id": (header[0], POSITION), "label": (header[1], POSITION)}
    return {}


def _unrecognised(role: str, candidates: list[str], header: list[str], labels: Path) -> DataError:
    """The one-line refusal of a file whose `role` column cannot be told, naming the settings."""
    what = ROLE_WHAT[role]
    found = (f"several columns could hold {what} ({', '.join(candidates)})" if candidates
             else f"no column is named like {what}")
    key = ROLE_KEYS[role]
    return DataError(f"{found}; columns: {_listed(header)}; set {key} in the config or {ROLE_FLAGS[role]}",
                     source=str(labels), key=key)


def _listed(header: list[str]) -> str:
    more = f", ... ({len(header)} in all)" if len(header) > 10 else ""
    return ", ".join(header[:10]) + more


def _resolve_id(images: Path, image_id: str) -> Path | None:
    """The file an id names, or None if it would leave the image folder (never opened)."""
    if not image_id or "\x00" in image_id or Path(image_id).is_absolute() or ".." in Path(image_id).parts:
        return None
    candidate = images / image_id
    if candidate.suffix.lower() not in IMAGE_SUFFIXES:
        for suffix in (".png", ".jpg", ".jpeg"):
            with_suffix = images / f"{image_id}{suffix}"
            if with_suffix.exists():
                return with_suffix
    return candidate


def _natural_key(label: str) -> tuple[int, float | str]:
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


# ---------------------------------------------------------------- splits


def splits(labels: np.ndarray, cfg: DataConfig,
           parts: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, val) index pairs: one hold-out split, or `folds` k-fold splits.

    Fixed by `split_seed`, so every worker and every rerun sees the same split. `parts` (each
    image's `Entry.part`, from `parts_of`): only `data.path`'s images are cut; `data.val`'s
    images are the validation set instead of a cut, and `data.test`'s are in neither.
    """
    rng = np.random.default_rng(cfg.split_seed)
    pool = np.arange(len(labels)) if parts is None else np.flatnonzero(parts == TRAIN)
    own_val = np.flatnonzero(parts == VAL) if parts is not None else np.empty(0, dtype=np.int64)
    if cfg.subset is not None and cfg.subset < len(pool):
        share = cfg.subset / len(pool)
        pool = np.sort(np.concatenate([rng.permutation(pool[labels[pool] == c])[: max(2, round(share * n))]
                                       for c, n in zip(*np.unique(labels[pool], return_counts=True), strict=True)]))
    if len(own_val):  # the user's own validation set (k folds with it are refused by the config check)
        return [(pool, own_val)]
    by_class = [rng.permutation(pool[labels[pool] == c]) for c in np.unique(labels[pool])]
    if cfg.folds == 1:
        val = np.concatenate([idx[: max(1, round(len(idx) * cfg.val_fraction))] for idx in by_class])
        train = np.setdiff1d(pool, val)
        return [(train, np.sort(val))]
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    offset = 0
    for idx in by_class:  # deal each class round-robin, continuing where the last class stopped
        fold_of[idx] = (np.arange(len(idx)) + offset) % cfg.folds
        offset += len(idx)
    return [(np.flatnonzero((fold_of != k) & (fold_of >= 0)), np.flatnonzero(fold_of == k)) for k in range(cfg.folds)]


def parts_of(found: Scan) -> np.ndarray:
    """The part (TRAIN, VAL, TEST) of every image the scan found, in scan order: what `splits` cuts by."""
    if found.layout == "digits":
        return np.full(found.count, TRAIN)
    return np.array([e.part for e in found.entries])


def held_out(found: Scan) -> np.ndarray:
    """The images of `data.test`, in scan order: never trained on, never used to choose a trial."""
    return np.flatnonzero(parts_of(found) == TEST)


def labels_of(found: Scan) -> np.ndarray:
    """The class index of every image the scan found, in scan order (what `splits` cuts)."""
    if found.layout == "digits":
        return load_digits()[1]
    return np.array([e.label for e in found.entries], dtype=np.int64)


def split_sizes(found: Scan, cfg: DataConfig) -> dict[str, Any]:
    """How many images train and validate each trial, and the validation set's classes: what a
    user needs to judge a result (a validation set of 30 images cannot tell 0.93 from 0.96).
    With k folds, the figures are the first fold's; every fold validates on about 1/k."""
    labels = labels_of(found)
    parts = parts_of(found)
    train, val = splits(labels, cfg, parts)[0]
    if len(train) == 0:  # a trial would "train" on nothing and report chance as a result
        raise DataError(f"no training images left: all {len(val)} of {len(labels)} go to validation; add images, "
                        "or lower data.val_fraction", source=str(found.root), key="data.path")
    counts = np.bincount(labels[val], minlength=len(found.classes))
    out = {"images": len(labels), "train": len(train), "val": len(val), "folds": cfg.folds,
           "val_counts": {c: int(n) for c, n in zip(found.classes, counts, strict=True)}}
    if cfg.val is not None:
        out["val_source"] = cfg.val
    if cfg.test is not None:
        out["test"] = int((parts == TEST).sum())
    return out
