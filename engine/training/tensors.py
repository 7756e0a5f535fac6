"""Images as tensors: decoded once into the workspace's image cache, served as batches.

Every worker reads the decoded images from one cache file (`engine.datasets.image_cache`: one
process decodes, in parallel, while the others wait), so only the first worker on a machine, and
only the first sweep on the same files, decodes a JPEG at all. Datasets under
`data.cache_limit_mb` once decoded live in memory as one uint8 tensor, so an epoch is index
slicing with no decoding and no threads. Larger ones stay memory-mapped: a background thread
gathers the next batches from the file while the model trains on this one.
"""

from __future__ import annotations

import math
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import DataConfig
from engine.datasets.image_cache import decoded
from engine.datasets.scan import Scan, load_digits
from engine.system.platform import usable_cores

PREFETCH = 2  # batches gathered ahead of the training loop: enough to hide one slow read
STATS_SAMPLE = 256  # images behind the normalisation statistics of a memory-mapped dataset
DEVICE_CACHE_FRACTION = 0.05  # of a GPU's memory, at most, for one worker's copy of the images
T = TypeVar("T")


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) from uint8 (N, C, H, H): bilinear (antialiased when shrinking),
    one channel expanded to three."""
    if x.shape[-1] != size:
        resized = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=x.shape[-1] > size,
                                align_corners=False)
        x = resized.round().clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return x


def _prefetched(items: Iterator[T], depth: int = PREFETCH) -> Iterator[T]:
    """`items`, produced by a background thread that stays at most `depth` items ahead, so
    reading the next batch overlaps training on this one. Stopping early (a closed generator)
    stops the thread; an error in it is raised here."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
        except BaseException as exc:  # raised in the consumer, where the training loop sees it
            put("error", exc)
            return
        put("end", None)

    thread = threading.Thread(target=produce, name="prefetch-batches", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


@dataclass
class ImageData:
    """All images of a scan, plus what decoding had to skip."""

    scan: Scan
    cfg: DataConfig
    labels: torch.Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _base: torch.Tensor | None = None  # in memory: uint8 (N, C, H, W) at the largest size asked for
    _mapped: np.ndarray | None = None  # else the cache file, memory-mapped: uint8 (rows, 3, H, W)
    _rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # image i: _mapped[_rows[i]]
    _by_size: dict[int, torch.Tensor] = field(default_factory=dict)
    _stats: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    _on_device: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

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
            self._by_size[size] = _resized(self._base, size)
        return self._by_size[size]

    def _gather(self, take: np.ndarray, size: int) -> torch.Tensor:
        """uint8 (len(take), 3, size, size) from the mapped cache: read in file order (fewer seeks),
        returned in `take`'s order."""
        assert self._mapped is not None
        rows = self._rows[take]
        by_row = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self._mapped.shape[1:]), dtype=np.uint8)
        out[by_row] = self._mapped[rows[by_row]]
        return _resized(torch.from_numpy(out), size)

    def mean_std(self, size: int, train_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel statistics of the training images (a sample of them when memory-mapped),
        kept per size and split."""
        key = (size, hash(train_idx.tobytes()))
        if key not in self._stats:
            if self.cached:
                x = self.images(size)[torch.from_numpy(train_idx)].float() / 255
            else:
                x = self._gather(train_idx[:: max(1, len(train_idx) // STATS_SAMPLE)], size).float() / 255
            mean = x.mean(dim=(0, 2, 3))
            std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
            self._stats[key] = (mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1))
        return self._stats[key]

    def resident(self, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The in-memory images at `size` and their labels on `device`, copied there once per
        worker; None when they are not in memory or would take more than DEVICE_CACHE_FRACTION
        of the device (several workers may share it)."""
        if not self.cached:
            return None
        key = (size, str(device))
        if key not in self._on_device:
            images = self.images(size)
            total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
            if total is not None and images.numel() > total * DEVICE_CACHE_FRACTION:
                return None
            self._on_device[key] = (images.to(device), self.labels.to(device))
        return self._on_device[key]

    def batches(self, idx: np.ndarray, size: int, batch_size: int, shuffle: bool,
                generator: torch.Generator, pin_memory: bool = False,
                device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) over `idx`, shuffled by `generator` when asked: the same batches
        whether the images are in memory, memory-mapped, or (`device`) resident on the GPU, where
        a batch is an index into device memory: no copy from the host per step."""
        order = torch.from_numpy(idx)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator)]
        on_device = self.resident(size, device) if device is not None else None
        if on_device is not None:
            images, labels = on_device
            order = order.to(images.device)
            for start in range(0, len(order), batch_size):
                take = order[start:start + batch_size]
                yield images[take], labels[take]
            return
        if self.cached:
            images = self.images(size)
            for start in range(0, len(order), batch_size):
                take = order[start:start + batch_size]
                xb, yb = images[take], self.labels[take]
                yield (xb.pin_memory(), yb.pin_memory()) if pin_memory else (xb, yb)
            return
        yield from _prefetched(self._gathered(order, size, batch_size, pin_memory))

    def _gathered(self, order: torch.Tensor, size: int, batch_size: int,
                  pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            take = order[start:start + batch_size]
            xb, yb = self._gather(take.numpy(), size), self.labels[take]
            yield (xb.pin_memory(), yb.pin_memory()) if pin_memory else (xb, yb)


def load(scan: Scan, cfg: DataConfig, max_size: int, cache_dir: Path | None = None) -> ImageData:
    """The scan's images at `max_size`, read from the decoded-image cache in `cache_dir` (decoded
    into it first when it has none for these files); unreadable files are skipped, reported in
    `skipped` and dropped from `scan.entries`.

    Without a cache dir (a run outside a workspace) the cache lives in a temporary folder for this
    call only: an in-memory dataset is read out of it, a memory-mapped one stays readable after
    its file is deleted (POSIX).
    """
    if scan.layout == "digits":
        pixels, labels = load_digits()
        base = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8); channels expand per size
        return ImageData(scan=scan, cfg=cfg, labels=torch.from_numpy(labels), _base=base)
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="tui-hpo-images-") as tmp:
            return load(scan, cfg, max_size, Path(tmp))
    found = decoded(scan.entries, scan.root, max_size, cache_dir, usable_cores())
    entries = scan.entries
    keep = [i for i in range(len(entries)) if i not in found.failed]
    skipped = [(str(entries[i].path), why) for i, why in sorted(found.failed.items())]
    if skipped:
        scan.entries = [entries[i] for i in keep]
    labels = torch.tensor([entries[i].label for i in keep], dtype=torch.int64)
    rows = found.rows[keep]
    if len(keep) * 3 * max_size * max_size / 2**20 > cfg.cache_limit_mb:
        return ImageData(scan=scan, cfg=cfg, labels=labels, skipped=skipped, _mapped=found.images, _rows=rows)
    base = torch.from_numpy(found.images[rows])  # one read of the file into memory, in scan order
    return ImageData(scan=scan, cfg=cfg, labels=labels, skipped=skipped, _base=base)


def augment(x: torch.Tensor, strength: float, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random per-sample rotation, scale and shift, growing with `strength` in [0, 1], and with
    `hflip` a mirror image for half the samples (right for photos, wrong for glyphs and text)."""
    n = x.shape[0]
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if strength <= 0:
        return x
    rand = torch.rand(n, 4, generator=generator, device="cpu").to(x.device) * 2 - 1
    angle = rand[:, 0] * math.radians(15) * strength
    scale = 1 + rand[:, 1] * 0.15 * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, rand[:, 2] * 0.1 * strength], 1),
                         torch.stack([sin, cos, rand[:, 3] * 0.1 * strength], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
