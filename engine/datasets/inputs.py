"""Images to predict: a folder searched recursively (an ImageFolder tree's class folder names
become optional labels), or a CSV of ids in the layouts `scan` reads (a label column, when there
is one, too), given itself or as the one CSV at the top of the folder, as training reads it.
Unusable files are checked and skipped exactly as `scan` does, and listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import DataConfig
from engine.datasets.scan import (
    ID_NAMES,
    IMAGE_SUFFIXES,
    Entry,
    Scan,
    _check_image,
    _columns,
    _csv_rows,
    _image_folder_for,
    _normal,
    _resolve_id,
    labels_csv_in,
)
from engine.errors import DataError, UserError, one_line


@dataclass
class Inputs:
    """Readable image files, each with its id (relative path, or the CSV's id) and its label
    (class folder or label column), or None where there is none."""

    root: str
    ids: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why)

    def skipped_summary(self) -> str | None:
        return Scan("", self.root, [], skipped=self.skipped).skipped_summary()

    def as_scan(self, classes: list[str]) -> Scan:
        """A Scan of these files for `engine.training.tensors.load` (the training reader); a
        label that is one of `classes` is its index, any other 0."""
        index = {c: i for i, c in enumerate(classes)}
        entries = [Entry(p, index.get(label or "", 0)) for p, label in zip(self.paths, self.labels, strict=True)]
        return Scan(layout="imagefolder", root=self.root, classes=list(classes), entries=entries, count=len(entries))


def find_inputs(path: str, key: str = "--data") -> Inputs:
    """The images under `path` (a folder, or a CSV file); DataError when none is readable."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError("no such file or folder", source=str(root), key=key)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError("must be a folder of images or a CSV of image ids", source=str(root), key=key)
        found = _from_csv(root, key)
    elif (labels := labels_csv_in(root, key)) is not None:  # the CSV layout, as training reads the folder
        found = _from_csv(labels, key)
    else:
        found = _from_folder(root.resolve())
    if not found.paths:
        why = f"; {found.skipped_summary()}" if found.skipped else ""
        raise DataError(f"no readable images found{why}", source=str(root), key=key)
    return found


def _from_folder(root: Path) -> Inputs:
    found = Inputs(root=str(root))
    # Files of other kinds (a README, a labels CSV) are not images anyone asked for: passed over silently.
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root).parts)):
        if path.is_dir():
            continue
        rel = path.relative_to(root)
        shown = one_line(rel.as_posix())
        problem = _check_image(path, root)
        if problem:
            found.skipped.append((shown, problem))
            continue
        found.ids.append(rel.as_posix())
        found.paths.append(path.resolve())
        found.labels.append(rel.parts[0] if len(rel.parts) > 1 else None)
    return found


def _from_csv(labels: Path, key: str) -> Inputs:
    images = _image_folder_for(labels.parent, labels).resolve()
    rows = _csv_rows(labels)
    first = next(rows, None)
    if first is None or first[1] is None:
        raise DataError("empty or unreadable header", source=str(labels), key=key)
    header = [h.strip().lstrip("\ufeff") for h in first[1]]
    body = list(rows)
    first_values = [row[0].strip() for _line, row, _error in body[:20] if row and row[0].strip()]
    try:  # ids and labels, as a labels CSV is read for training
        columns = _columns(header, DataConfig(), labels, first_values)
        id_at, label_at = header.index(columns.id), header.index(columns.label)
    except UserError:  # no label column: the column named like an id, or the only one
        named = [h for h in header if _normal(h) in ID_NAMES]
        if len(named) == 1 or len(header) == 1:
            id_at, label_at = header.index(named[0] if named else header[0]), None
        else:
            raise DataError(f"cannot tell the id column (columns: {', '.join(header[:10])}): name it 'id' or "
                            "'filename'", source=str(labels), key=key) from None
    found, seen = Inputs(root=str(images)), set()
    for line, row, error in body:
        if row is None:
            found.skipped.append((f"{labels.name}:{line}", f"malformed row ({error})"))
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(id_at, label_at or 0):
            found.skipped.append((f"{labels.name}:{line}", "too few columns"))
            continue
        image_id = row[id_at].strip()
        shown = one_line(image_id[:80])
        file = _resolve_id(images, image_id)
        if file is None:
            found.skipped.append((shown, "outside the data folder"))
            continue
        problem = _check_image(file, images)
        if problem:
            found.skipped.append((shown, problem))
            continue
        resolved = file.resolve()
        if image_id in seen or resolved in seen:
            found.skipped.append((shown, "duplicate id"))
            continue
        seen.update((image_id, resolved))
        found.ids.append(image_id)
        found.paths.append(resolved)
        found.labels.append(row[label_at].strip() if label_at is not None else None)
    return found

