"""`batch_size: auto`: the largest batch that fits, found by real training steps on the GPU and
kept per (GPU, model, image size, precision, memory layout, torch) in the user's cache.

The origin documents' `auto_batch_size` doubles the batch until memory runs out, then keeps a
safety share of the largest that fitted (0.80 on a 10 GB card ... 0.95 on a 24 GB one): memory
fragments over a long run, and a validation pass or a checkpoint save needs room too. The search
here is the same: double from a small batch, then bisect between the last fit and the first
failure, in steps of 8 (tensor cores work in multiples of 8). The measurement itself
(`engine.training.batch_finder`) imports torch; this module holds what the engine needs without
it: the search, the safety share and the cache (engine.datasets.defaults puts the results into a
sweep's config).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.artifacts import user_cache_dir, write_atomic

GRAIN = 8  # batches above this are multiples of it
START = 16
LIMIT = 4096


@dataclass(frozen=True)
class Found:
    largest: int  # the largest batch whose training steps ran
    batch: int  # what trials use: `largest` x the safety share, down to a multiple of GRAIN
    safety: float
    peak_mb: float | None  # the GPU's peak memory at `largest`
    total_mb: float | None
    tried: int  # training steps runs it took


def largest_batch(fits: Callable[[int], bool], start: int = START, limit: int = LIMIT) -> tuple[int, int]:
    """(the largest batch `fits` accepts, how many were tried); 0 when not even batch 1 fits.
    Doubles from `start` (halving below it first if `start` fails), then bisects to GRAIN."""
    tried = 0

    def ok(batch: int) -> bool:
        nonlocal tried
        tried += 1
        return fits(batch)

    batch = min(start, limit)
    if not ok(batch):
        while batch > 1:
            batch //= 2
            if ok(batch):
                break
        else:
            return 0, tried
        return batch, tried  # a card this small is found by halving: finer steps buy nothing
    low = batch
    while low < limit:
        high = min(low * 2, limit)
        if not ok(high):
            break
        low = high
    else:
        return low, tried
    while high - low > GRAIN:  # low fits, high does not
        middle = (low + high) // 2 // GRAIN * GRAIN
        if middle <= low:
            break
        if ok(middle):
            low = middle
        else:
            high = middle
    return low, tried


def safe_batch(largest: int, safety: float) -> int:
    """The share of `largest` trials use: down to a multiple of GRAIN above it, never below 1."""
    share = math.floor(largest * safety)
    return max(1, share // GRAIN * GRAIN if share >= GRAIN else share)


def cache_key(gpu: str, model: str, image_size: int, amp: str, channels_last: bool, torch_version: str) -> str:
    layout = "channels-last" if channels_last else "contiguous"
    return f"{gpu}|{model}|{image_size}px|amp {amp}|{layout}|torch {torch_version}"


def _path(cache: Path | None) -> Path:
    return cache or user_cache_dir() / "batch_sizes.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remembered(key: str, cache: Path | None = None) -> Found | None:
    entry = _load(_path(cache)).get(key)
    try:
        return Found(**entry) if isinstance(entry, dict) else None
    except TypeError:  # written by another version
        return None


def remember(key: str, found: Found, cache: Path | None = None) -> None:
    path = _path(cache)
    data = _load(path)
    data[key] = asdict(found)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
