"""Inference with a package (`engine.training.package`): `tui-hpo predict` and `evaluate`.

Images go through the training reader (`engine.training.tensors.load`: decoded at the package's
decode size, resized to its image size, the same skipping of unreadable files) and the training
normalisation, so predicting a sweep's validation images reproduces its validation accuracy.

Test-time augmentation (TTA) averages the softmax probabilities of several views of each image:
`flip` (the image and its mirror), `five-crop` (the four corners and the centre, each 7/8 of the
image, resized back), `flip+scale` (each of the first two zoomed to 0.9, 1.0 and 1.1 of the
image size around the centre, cropped or edge-padded back to the image size: six views).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.artifacts import user_cache_dir, write_atomic
from engine.config import DataConfig
from engine.datasets.inputs import Inputs
from engine.datasets.scan import parts_of, scan, splits
from engine.errors import UserError
from engine.training.fit import macro_f1
from engine.training.package import Package
from engine.training.tensors import ImageData, load

POLICIES = ("none", "flip", "five-crop", "flip+scale")  # cheapest first: a tie goes to the fewer views
CROP = 0.875  # five-crop: each crop's side, as a share of the image's, resized back to the image size
SCALES = (0.9, 1.0, 1.1)
BATCH = 256  # validation's own batch floor (`fit.validate`): the same batches, the same sums


def resolve_device(text: str) -> str:
    """auto, cpu, cuda, cuda:N or mps, checked against what torch can use."""
    text = text.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("mps is not available on this machine", key="--device")
        return "mps"
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        index = int(text[5:] or 0)
        if not torch.cuda.is_available():
            raise UserError(f"{text}: no CUDA GPU is available to torch here", key="--device")
        if index >= torch.cuda.device_count():
            raise UserError(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s)", key="--device")
        return f"cuda:{index}"
    raise UserError(f"'{text}': expected auto, cpu, cuda, cuda:N or mps", key="--device")


def _zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` (N, C, S, S) zoomed by `scale` around the centre: resized to scale x S, then cropped
    (zoom in) or edge-padded (zoom out) back to S."""
    size = x.shape[-1]
    n = max(1, round(size * scale))
    if n == size:
        return x
    y = F.interpolate(x, size=(n, n), mode="bilinear", antialias=n < size, align_corners=False)
    if n > size:
        at = (n - size) // 2
        return y[..., at:at + size, at:at + size]
    lo = (size - n) // 2
    hi = size - n - lo
    return F.pad(y, (lo, hi, lo, hi), mode="replicate")


def _five_crops(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The four corners and the centre of `x` (N, C, S, S), each CROP x S on a side, resized back
    to S: what the model sees of an image that is a little off-centre."""
    size = x.shape[-1]
    n = max(1, round(size * CROP))
    centre = (size - n) // 2
    for top, left in ((0, 0), (0, size - n), (size - n, 0), (size - n, size - n), (centre, centre)):
        crop = x[..., top:top + n, left:left + n]
        yield crop if n == size else F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)


def views(x: torch.Tensor, policy: str) -> Iterator[torch.Tensor]:
    """The views of a normalised batch that `policy` averages over."""
    if policy == "none":
        yield x
    elif policy == "flip":
        yield x
        yield x.flip(-1)
    elif policy == "five-crop":
        yield from _five_crops(x)
    elif policy == "flip+scale":
        for scale in SCALES:
            zoomed = _zoom(x, scale)
            yield zoomed
            yield zoomed.flip(-1)
    else:
        raise ValueError(f"unknown TTA policy {policy!r}")


def _averaged(model: nn.Module, x: torch.Tensor, policy: str) -> torch.Tensor:
    """Softmax probabilities of `x`, averaged over the policy's views, on the CPU."""
    total, count = None, 0
    for view in views(x, policy):
        p = torch.softmax(model(view).float(), dim=1)
        total, count = (p if total is None else total + p), count + 1
    assert total is not None
    return (total / count).cpu()


def fitting(x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor], chunk: list[int]) -> torch.Tensor:
    """`forward` over `x` in pieces of `chunk[0]` images, halving `chunk[0]` on out-of-memory
    until a piece fits: the batch a GPU (or a small CPU) can take is found on the first batch
    and kept, so predicting never fails for memory a smaller batch would have had."""
    while True:
        try:
            return torch.cat([forward(part) for part in x.split(chunk[0])])
        except torch.OutOfMemoryError:
            if chunk[0] == 1:
                raise UserError("out of memory on a single image: use a smaller model or another --device",
                                key="--batch") from None
            chunk[0] = max(1, chunk[0] // 2)
            if x.is_cuda:
                torch.cuda.empty_cache()


@torch.no_grad()
def probabilities(model: nn.Module, package: Package, data: ImageData, idx: np.ndarray, device: str,
                  policy: str = "none", batch: int = BATCH,
                  on_batch: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """float32 (len(idx), classes): softmax probabilities, averaged over the policy's views."""
    dev = torch.device(device)
    mean, std = package.normalisation(dev)
    out = []
    chunk = [batch]  # the images one forward pass takes: halved, for the rest of the run, on out-of-memory
    for xb, _yb in data.batches(idx, package.image_size, batch, False, torch.Generator(),
                                device=dev if dev.type == "cuda" else None):
        # As fit._prepare normalises for training and validation: the same operations in the same order.
        x = xb.to(dev).float().div_(255).sub_(mean).div_(std)
        out.append(fitting(x, lambda part: _averaged(model, part, policy), chunk))
        on_batch(len(xb))
    n = len(package.classes)
    return torch.cat(out).numpy() if out else np.zeros((0, n), dtype=np.float32)


def scores(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(accuracy, macro-F1) of the argmax predictions against `labels` (class indices)."""
    predicted = torch.from_numpy(probs.argmax(1))
    truth = torch.from_numpy(labels).long()
    confusion = torch.bincount(truth * num_classes + predicted, minlength=num_classes**2).view(num_classes, -1)
    return float((predicted == truth).float().mean()) if len(truth) else 0.0, macro_f1(confusion)


@dataclass(frozen=True)
class Predictions:
    ids: list[str]
    classes: tuple[str, ...]
    probs: np.ndarray  # float32 (N, classes)
    truth: list[str | None]  # each image's class folder or label column, None where it has none
    skipped: list[tuple[str, str]]  # (id, why): unreadable, missing, not decodable
    policy: str

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probs.argmax(1)] if len(self.ids) else []

    def labels(self) -> np.ndarray | None:
        """Class indices of the truth, when every image has one of the package's classes."""
        index = {c: i for i, c in enumerate(self.classes)}
        if not self.ids or any(t not in index for t in self.truth):
            return None
        return np.array([index[t] for t in self.truth if t is not None], dtype=np.int64)

    def scores(self) -> tuple[float, float] | None:
        labels = self.labels()
        return None if labels is None else scores(self.probs, labels, len(self.classes))

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["id", "predicted", *(f"prob_{c}" for c in self.classes)])
        for image_id, name, row in zip(self.ids, self.predicted, self.probs, strict=True):
            writer.writerow([image_id, name, *(f"{p:.6f}" for p in row)])
        return buffer.getvalue()

    def write_csv(self, path: Path) -> None:
        write_atomic(path, self.csv_text())


def read_images(inputs: Inputs, package: Package) -> tuple[ImageData, Inputs]:
    """The inputs' images through the training reader, and the inputs that decoded (the others
    moved to `skipped`). DataError-free: the caller decides whether none left is fatal."""
    found = inputs.as_scan(list(package.classes))
    at = {path: i for i, path in enumerate(inputs.paths)}
    data = load(found, DataConfig(), package.decode_size)
    kept = [at[e.path] for e in data.scan.entries]
    failed = {Path(p): why for p, why in data.skipped}
    skipped = inputs.skipped + [(inputs.ids[i], failed[inputs.paths[i]]) for i in range(len(inputs.paths))
                                if inputs.paths[i] in failed]
    return data, Inputs(root=inputs.root, ids=[inputs.ids[i] for i in kept], paths=[inputs.paths[i] for i in kept],
                        labels=[inputs.labels[i] for i in kept], skipped=skipped)


def predict(model: nn.Module, package: Package, inputs: Inputs, device: str, policy: str = "none",
            batch: int = BATCH, on_batch: Callable[[int], None] = lambda n: None,
            read: tuple[ImageData, Inputs] | None = None) -> Predictions:
    data, kept = read or read_images(inputs, package)
    if not kept.ids:
        raise UserError(f"no readable images left; {kept.skipped_summary()}", source=inputs.root, key="--data")
    probs = probabilities(model, package, data, np.arange(len(kept.ids)), device, policy, batch, on_batch)
    return Predictions(kept.ids, package.classes, probs, kept.labels, kept.skipped, policy)


def own_validation(package: Package) -> tuple[ImageData, np.ndarray]:
    """The validation images of the run that made the package: its data config's split, cut as
    the worker and `tui-hpo train` cut it (the fold whose model the package holds)."""
    if not package.data:
        raise UserError("this package records no data to validate on: give --val PATH", key="--tta")
    cfg = DataConfig.model_validate(package.data)
    found = scan(cfg)
    if list(found.classes) != list(package.classes):
        raise UserError(f"the package's data ({found.root}) now has other classes: give --val PATH", key="--tta")
    data = load(found, cfg, package.decode_size, cache_dir=user_cache_dir() / "images")
    folds = splits(data.labels.numpy(), cfg, parts_of(data.scan))
    return data, folds[min(int(package.meta.get("fold", 0)), len(folds) - 1)][1]


def compare(model: nn.Module, package: Package, data: ImageData, idx: np.ndarray, labels: np.ndarray,
            device: str, policies: tuple[str, ...] = POLICIES, batch: int = BATCH,
            on_batch: Callable[[int], None] = lambda n: None) -> dict[str, tuple[float, float]]:
    """(accuracy, macro-F1) of each policy on labelled images."""
    return {policy: scores(probabilities(model, package, data, idx, device, policy, batch, on_batch), labels,
                           len(package.classes)) for policy in policies}


def best_policy(results: dict[str, tuple[float, float]]) -> str:
    """The most accurate policy; on a tie the cheaper one (fewer views), macro-F1 aside."""
    return max(results, key=lambda p: (results[p][0], -POLICIES.index(p)))
