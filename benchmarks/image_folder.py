"""Image-folder throughput: a plain torchvision ImageFolder + DataLoader epoch against the engine's
decoded-image cache, on the same generated JPEGs.

Writes --images JPEGs (256x256, 10 class folders, smooth gradients with noise: compressible like
photos) to a temporary folder, then at each --sizes:
- plain: `ImageFolder` + `Resize` + `ToTensor`, `DataLoader(num_workers=usable cores)`, one
  shuffled epoch, dataset construction included: it decodes every JPEG in every epoch.
- trial 1: `load()` with an empty cache dir (the one build: parallel decoding into the cache
  file), then one shuffled epoch of `batches()` with the same float conversion.
- trial 2: `load()` again on the same cache (what every other worker and sweep does: no
  decoding), then one epoch; and the same with `cache_limit_mb=0` (memory-mapped batches).
The scan (which opens every file's header in both old and new code) is timed on its own.
Prints `key=value` figures, and `ratio=<trial 2 / plain samples per second>` (first size) last.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.training.tensors import ImageData

BATCH = 64
CLASSES = 10
SOURCE = 256


def write_folder(root: Path, images: int) -> None:
    """`images` JPEGs in CLASSES folders: a per-class colour gradient, a random tilt, noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, SOURCE, dtype=np.float32)
    for i in range(images):
        label = i % CLASSES
        tilt = rng.uniform(0, 1)
        plane = ramp[None, :] * tilt + ramp[:, None] * (1 - tilt)
        colour = (np.array([label * 25, 255 - label * 25, 128], np.float32) + rng.normal(0, 30, 3))
        pixels = plane[..., None] * colour + rng.normal(0, 12, (SOURCE, SOURCE, 3)).astype(np.float32)
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def plain_samples_per_s(root: Path, size: int, workers: int) -> float:
    """One epoch as a plain PyTorch script reads an image folder."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    started = time.perf_counter()
    dataset = datasets.ImageFolder(str(root), transform=transforms.Compose([transforms.Resize((size, size)),
                                                                              transforms.ToTensor()]))
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    seen = sum(len(labels) for _images, labels in loader)
    return seen / (time.perf_counter() - started)


def epoch_seconds(data: ImageData, size: int) -> float:
    """One shuffled epoch of `batches()`, converted to float as the plain side's ToTensor does."""
    import torch

    started = time.perf_counter()
    idx = np.arange(len(data.labels))
    for images, _labels in data.batches(idx, size, BATCH, True, torch.Generator().manual_seed(0)):
        images.float().div_(255)
    return time.perf_counter() - started


def measure(root: Path, cache: Path, size: int, workers: int) -> dict[str, float]:
    from engine.config import DataConfig
    from engine.datasets.scan import scan
    from engine.training.tensors import load

    cfg = DataConfig(path=str(root))
    started = time.perf_counter()
    found = scan(cfg)
    scan_s = time.perf_counter() - started
    n = len(found.entries)
    plain = plain_samples_per_s(root, size, workers)
    started = time.perf_counter()
    first = load(found, cfg, size, cache)
    build_s = time.perf_counter() - started
    trial1_epoch_s = epoch_seconds(first, size)
    del first
    found = scan(cfg)
    started = time.perf_counter()
    second = load(found, cfg, size, cache)
    load_s = time.perf_counter() - started
    trial2_epoch_s = epoch_seconds(second, size)
    mapped_cfg = DataConfig(path=str(root), cache_limit_mb=0)
    mapped = load(scan(mapped_cfg), mapped_cfg, size, cache)
    mapped_epoch_s = epoch_seconds(mapped, size)
    return {"scan_s": scan_s, "plain_samples_per_s": plain,
            "build_s": build_s, "trial1_samples_per_s": n / (build_s + trial1_epoch_s),
            "trial2_load_s": load_s, "trial2_samples_per_s": n / trial2_epoch_s,
            "trial2_mapped_samples_per_s": n / mapped_epoch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64], help="image sizes; the first gives ratio=")
    args = parser.parse_args()
    from engine.system.platform import usable_cores

    workers = usable_cores()
    with tempfile.TemporaryDirectory(prefix="tui-hpo-bench-images-") as tmp:
        root = Path(tmp) / "images"
        started = time.perf_counter()
        write_folder(root, args.images)
        print(f"wrote {args.images} JPEGs at {SOURCE}x{SOURCE} in {time.perf_counter() - started:.1f} s; "
              f"{workers} usable cores, batch {BATCH}")
        ratios = []
        for size in args.sizes:
            figures = measure(root, Path(tmp) / "cache", size, workers)
            suffix = "" if size == args.sizes[0] else f"_{size}"
            print(f"size={size}")
            for key, value in figures.items():
                print(f"{key}{suffix}={value:.2f}")
            ratios.append(figures["trial2_samples_per_s"] / figures["plain_samples_per_s"])
    print(f"ratio={ratios[0]:.1f}")


if __name__ == "__main__":
    main()
