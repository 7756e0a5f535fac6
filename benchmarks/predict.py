"""Prediction throughput: `tui-hpo predict`'s engine against a plain batched PyTorch loop.

Writes --images PNGs (the embedded digits, repeated, 8x8 greyscale, in 10 class folders) to a
temporary folder and a model package (timm `test_resnet` at --size px, untrained: the weights do
not change the cost). Then, alternating, --rounds times each:
- plain: the file list, a `DataLoader` (workers: the usable cores) whose dataset opens each file
  with PIL, converts to RGB and resizes, the same normalisation, `model(x).softmax(1)` in batches
  of --batch under `torch.no_grad()`.
- predict: what the command runs after loading the package: `find_inputs` (every file checked
  as training's scan checks it), `read_images` (the training reader: parallel decoding into a
  temporary cache) and `probabilities` (the same batches and softmax).
Both sides include everything from the folder to the probabilities. Prints `key=value` figures
and `ratio=<plain seconds / predict seconds>` (medians; >= 0.8 is the goal) last.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_folder(root: Path, images: int) -> None:
    from PIL import Image

    from engine.datasets.scan import load_digits

    pixels, labels = load_digits()
    for i in range(images):
        j = i % len(labels)
        folder = root / str(labels[j])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[j]).save(folder / f"{i:05d}.png")


def plain(root: Path, model, mean, std, size: int, batch: int, workers: int) -> float:
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __init__(self, paths: list[Path]) -> None:
            self.paths = paths

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(self.paths[i]) as image:
                rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy())

    started = time.perf_counter()
    paths = sorted(p for p in root.rglob("*.png"))
    out = []
    with torch.no_grad():
        for xb in DataLoader(Files(paths), batch_size=batch, num_workers=workers):
            x = xb.float().div_(255).sub_(mean).div_(std)
            out.append(model(x).softmax(1))
    assert sum(len(o) for o in out) == len(paths)
    return time.perf_counter() - started


def engine(root: Path, model, package, batch: int) -> float:
    from engine.datasets.inputs import find_inputs
    from engine.training.predict import probabilities, read_images

    started = time.perf_counter()
    data, kept = read_images(find_inputs(str(root)), package)
    probs = probabilities(model, package, data, np.arange(len(kept.ids)), "cpu", "none", batch)
    assert len(probs) == len(kept.ids)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import timm
    import torch

    from engine.system.platform import usable_cores
    from engine.training.package import load_package, package_meta, save_package

    workers = usable_cores()
    with tempfile.TemporaryDirectory(prefix="tui-hpo-predict-bench-") as tmp:
        root = Path(tmp) / "images"
        started = time.perf_counter()
        write_folder(root, args.images)
        print(f"images={args.images} size={args.size} batch={args.batch} workers={workers} "
              f"torch_threads={torch.get_num_threads()} write_s={time.perf_counter() - started:.1f}")
        torch.manual_seed(0)
        built = timm.create_model("test_resnet", num_classes=10).eval()
        mean, std = torch.full((3,), 0.3), torch.full((3,), 0.4)
        path = Path(tmp) / "model.safetensors"
        save_package(path, built, package_meta(
            train={"model": "test_resnet"}, data={}, classes=[str(d) for d in range(10)], image_size=args.size,
            decode_size=args.size, mean=mean, std=std, metrics={}))
        model, package = load_package(path, "cpu")
        m, s = package.normalisation("cpu")
        plains, engines = [], []
        for r in range(args.rounds):
            plains.append(plain(root, model, m, s, args.size, args.batch, workers))
            engines.append(engine(root, model, package, args.batch))
            print(f"round={r + 1} plain_s={plains[-1]:.2f} predict_s={engines[-1]:.2f} "
                  f"ratio={plains[-1] / engines[-1]:.3f}")
        p, e = statistics.median(plains), statistics.median(engines)
        print(f"plain_median_s={p:.2f} predict_median_s={e:.2f} plain_img_s={args.images / p:.0f} "
              f"predict_img_s={args.images / e:.0f}")
        print(f"ratio={p / e:.3f}")


if __name__ == "__main__":
    main()
