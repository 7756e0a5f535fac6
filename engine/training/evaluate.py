"""The test set (`data.test`) on one kept model package: accuracy and macro-F1, measured once, for
the best trial, when the sweep has ended. Never used to choose anything.

Run as a child of the engine (which never imports torch): `python -m engine.training.evaluate
--study NAME --checkpoint FILE --workdir DIR`, the storage URL in $TUI_HPO_STORAGE as for a worker;
it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import DataConfig, SweepConfig
from engine.datasets.scan import held_out, scan
from engine.training.fit import macro_f1
from engine.training.package import Package, load_package
from engine.training.tensors import ImageData, load


def test_images(cfg: DataConfig, package: Package, cache_dir: Path | None) -> tuple[ImageData, np.ndarray]:
    """`cfg.test`'s images decoded as the package's training decoded them, and their indices."""
    found = scan(cfg)
    if tuple(found.classes) != package.classes:
        raise ValueError(f"the data's classes ({len(found.classes)}) are not the package's ({len(package.classes)})")
    data = load(found, cfg, package.decode_size, cache_dir)
    return data, held_out(data.scan)


@torch.no_grad()
def evaluate_test(config: SweepConfig, checkpoint: Path, cache_dir: Path) -> dict[str, Any]:
    """{"images", "accuracy", "f1"} of the package `checkpoint` on `config.data.test`'s images,
    decoded (or read from the workspace's image cache) as training decoded them."""
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    model, package = load_package(checkpoint, device)
    data, idx = test_images(config.data, package, cache_dir)
    mean, std = package.normalisation(device)
    n = len(package.classes)
    confusion = torch.zeros(n, n, dtype=torch.int64, device=device)
    for xb, yb in data.batches(idx, package.image_size, 256, False, torch.Generator()):
        x = xb.to(device).float().div_(255).sub_(mean).div_(std)  # as training's `fit._prepare`
        y = yb.to(device)
        confusion += torch.bincount(y * n + model(x).argmax(1), minlength=n * n).view(n, n)
    count = int(confusion.sum())
    return {"images": count, "accuracy": round(float(confusion.diag().sum()) / max(1, count), 4),
            "f1": round(macro_f1(confusion.cpu()), 4)}


def main(argv: list[str] | None = None) -> int:
    from engine.storage import STORAGE_ENV, Store

    parser = argparse.ArgumentParser(prog="python -m engine.training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    row = Store(os.environ[STORAGE_ENV]).sweep(args.study)
    if row is None:
        parser.error(f"no sweep named '{args.study}'")
    result = evaluate_test(row.sweep_config(), args.checkpoint, args.workdir / ".cache" / "images")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
