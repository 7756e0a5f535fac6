"""Small real-photo datasets made on the spot from the photos installed packages ship.

Nothing is downloaded: scikit-learn ships two photographs (`china.jpg`, `flower.jpg`) and
matplotlib one (`grace_hopper.jpg`). Each class is one photograph; its images are random crops of
it at random scales, positions and aspect ratios, some mirrored, saved at mixed sizes and JPEG
qualities: what a user's few hundred phone photos look like to a classifier (real textures and
colours, no two images alike, no fixed size), small enough to train on a laptop CPU in minutes.

The benchmarks (`benchmarks/hpo_quality.py`) and the tests use them, in both layouts users bring:
an ImageFolder tree (`class/xxx.jpg`) and a flat folder with a labels CSV whose columns are not
ours (`filename,category`).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

PHOTOS = {  # class name -> (package, path inside it)
    "temple": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "portrait": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def photo_path(package: str, inside: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the sample photos need the {package} package")
    return Path(spec.origin).parent / inside


def _crops(photo: Path, count: int, rng: np.random.Generator) -> list[object]:
    """`count` PIL images cropped from `photo`: 15-45% of its shorter side, aspect 3:4 to 4:3,
    half of them mirrored, a quarter in greyscale, brightness and contrast within +-25%, each
    resized to 48-200 px on its longer side. Small crops of one photo share little but texture
    and palette, and greyscale takes the palette away: the classes overlap, as real ones do."""
    from PIL import Image, ImageEnhance, ImageOps

    with Image.open(photo) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    out = []
    for _ in range(count):
        side = rng.uniform(0.15, 0.45) * min(width, height)
        aspect = rng.uniform(0.75, 1.33)
        w, h = min(int(side * aspect ** 0.5), width), min(int(side / aspect ** 0.5), height)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = image.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        if rng.random() < 0.25:
            crop = ImageOps.grayscale(crop).convert("RGB")
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.75, 1.25))
        crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.75, 1.25))
        longer = int(rng.integers(48, 201))
        scale = longer / max(w, h)
        out.append(crop.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BILINEAR))
    return out


def make_photos(root: Path, per_class: int = 90, layout: str = "imagefolder", seed: int = 0,
                columns: tuple[str, str] = ("filename", "category")) -> Path:
    """Write `per_class` crops of each sample photo under `root` and return the data path to
    give tui-hpo: `root` itself for an ImageFolder tree; for `layout="csv"` the images go flat
    into `root/images/` with `root/labels.csv` naming each file and its class in `columns`."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str]] = []
    for name, (package, inside) in PHOTOS.items():
        for i, crop in enumerate(_crops(photo_path(package, inside), per_class, rng)):
            relative = f"{name}/{name}_{i:04d}.jpg" if layout == "imagefolder" else f"images/{name}_{i:04d}.jpg"
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            crop.save(target, quality=int(rng.integers(60, 96)))  # type: ignore[attr-defined]
            rows.append((relative.removeprefix("images/"), name))
    if layout == "imagefolder":
        return root
    if layout != "csv":
        raise ValueError(f"unknown layout {layout!r} (imagefolder or csv)")
    order = rng.permutation(len(rows))  # a labels file is rarely sorted by class
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows[i] for i in order)
    return root / "labels.csv"
