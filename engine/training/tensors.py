"""Images as tensors: decoded once per worker, cached per image size, served as batches.

Small datasets (under `data.cache_limit_mb` once decoded) live in memory as one uint8 tensor,
so an epoch is index slicing with no DataLoader, no decoding and no worker processes. Larger
ones are decoded on the fly by a DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from engine.config import DataConfig
from engine.datasets.scan import Entry, Scan, load_digits


def decode(path: str, size: int) -> np.ndarray:
    """An image file as uint8 (3, size, size): any mode converted to RGB, any size resized."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


class _FileDataset(Dataset):
    def __init__(self, entries: list[Entry], size: int) -> None:
        self.entries, self.size = entries, size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        entry = self.entries[i]
        return torch.from_numpy(decode(str(entry.path), self.size)), entry.label


@dataclass
class ImageData:
    """All images of a scan, plus what decoding had to skip."""

    scan: Scan
    cfg: DataConfig
    labels: torch.Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _base: torch.Tensor | None = None  # uint8 (N, C, H, W) at the largest size asked for
    _by_size: dict[int, torch.Tensor] = field(default_factory=dict)
    _stats: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.scan.classes)

    @property
    def cached(self) -> bool:
        return self._base is not None

    def images(self, size: int) -> torch.Tensor:
        """uint8 (N, 3, size, size), resized from the decoded base once and kept."""
        if self._base is None:
            raise RuntimeError("images() needs the in-memory cache")
        if size not in self._by_size:
            base = self._base
            if base.shape[-1] != size:
                resized = F.interpolate(base.float(), size=(size, size), mode="bilinear",
                                        antialias=base.shape[-1] > size, align_corners=False)
                base = resized.round().clamp(0, 255).to(torch.uint8)
            if base.shape[1] == 1:
                base = base.expand(-1, 3, -1, -1).contiguous()
            self._by_size[size] = base
        return self._by_size[size]

    def mean_std(self, size: int, train_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel statistics of the training images (a sample of them when streaming),
        kept per size and split."""
        key = (size, hash(train_idx.tobytes()))
        if key not in self._stats:
            if self.cached:
                x = self.images(size)[torch.from_numpy(train_idx)].float() / 255
            else:
                take = train_idx[:: max(1, len(train_idx) // 256)]
                ds = _FileDataset(self.scan.entries, size)
                x = torch.stack([ds[int(i)][0] for i in take]).float() / 255
            mean = x.mean(dim=(0, 2, 3))
            std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
            self._stats[key] = (mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1))
        return self._stats[key]

    def batches(self, idx: np.ndarray, size: int, batch_size: int, shuffle: bool,
                generator: torch.Generator, pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.from_numpy(idx)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator)]
        if self.cached:
            images = self.images(size)
            for start in range(0, len(order), batch_size):
                take = order[start:start + batch_size]
                xb, yb = images[take], self.labels[take]
                yield (xb.pin_memory(), yb.pin_memory()) if pin_memory else (xb, yb)
            return
        subset = torch.utils.data.Subset(_FileDataset(self.scan.entries, size), order.tolist())
        yield from DataLoader(subset, batch_size=batch_size, shuffle=False, pin_memory=pin_memory,
                              num_workers=self.cfg.loader_workers,
                              persistent_workers=self.cfg.loader_workers > 0)


def load(scan: Scan, cfg: DataConfig, max_size: int) -> ImageData:
    """Decode everything once (or prepare streaming when it would not fit the cache limit)."""
    if scan.layout == "digits":
        pixels, labels = load_digits()
        base = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8); channels expand per size
        return ImageData(scan=scan, cfg=cfg, labels=torch.from_numpy(labels), _base=base)
    entries = scan.entries
    estimate_mb = len(entries) * 3 * max_size * max_size / 2**20
    labels = torch.tensor([e.label for e in entries], dtype=torch.int64)
    if estimate_mb > cfg.cache_limit_mb:
        return ImageData(scan=scan, cfg=cfg, labels=labels)
    arrays, keep, skipped = [], [], []
    for i, entry in enumerate(entries):
        try:
            arrays.append(decode(str(entry.path), max_size))
            keep.append(i)
        except Exception as exc:  # truncated data behind a valid header: skip and report
            skipped.append((str(entry.path), f"unreadable ({exc.__class__.__name__})"))
    if skipped:
        scan.entries = [entries[i] for i in keep]
        labels = labels[keep]
    base = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 3, max_size, max_size,
                                                                          dtype=torch.uint8)
    return ImageData(scan=scan, cfg=cfg, labels=labels, skipped=skipped, _base=base)


def augment(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random per-sample rotation, scale and shift, growing with `strength` in [0, 1]."""
    if strength <= 0:
        return x
    n = x.shape[0]
    rand = torch.rand(n, 4, generator=generator, device="cpu").to(x.device) * 2 - 1
    angle = rand[:, 0] * math.radians(15) * strength
    scale = 1 + rand[:, 1] * 0.15 * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, rand[:, 2] * 0.1 * strength], 1),
                         torch.stack([sin, cos, rand[:, 3] * 0.1 * strength], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
