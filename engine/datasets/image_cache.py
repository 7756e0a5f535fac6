"""Decoded images on disk: each image folder is decoded once, into one uint8 array that every
worker, every later trial and every later sweep on the same files reads instead of decoding again.

For one (files, image size) pair, `<cache_dir>/<S>px-<fingerprint>.npy` holds uint8
(N, 3, S, S): one row per scan entry, in a canonical order (sorted by relative path, so the order
a folder or a CSV lists its files in does not matter), and `<...>.json` beside it holds the labels
by row, how many rows were kept, and the rows that could not be decoded with the reason. The
fingerprint hashes each file's relative path, size, mtime and label, the image size and
FORMAT_VERSION: any change to the files names another cache, so a stale one is never read.

One process builds, holding an exclusive `flock` on `<...>.lock`; the others wait for the lock and
then find the finished cache. The builder decodes with a pool of processes straight into the
memory-mapped array (a dataset larger than RAM never has to fit in RAM) under a temporary name,
syncs it and renames it into place, then writes the sidecar. A build that dies leaves its
temporary file (removed by the next build) and no sidecar for the new array; a cache without a
sidecar, or whose array does not have the shape and byte size its sidecar says, is built again,
never read.

No torch here: the layering keeps it in `engine.training`, and a decoding process needs only PIL
and numpy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from engine.artifacts import write_atomic
from engine.datasets.scan import Entry

FORMAT_VERSION = 1
CHUNK = 64  # images per decoding task: enough to amortise a task, few enough to balance the pool
PARALLEL_MIN = 4 * CHUNK  # fewer images decode faster in this process than a pool of processes starts

log = logging.getLogger("tui_hpo.images")


def decode(path: str, size: int) -> np.ndarray:
    """An image file as uint8 (3, size, size): any mode converted to RGB, any size resized."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class Decoded:
    """A finished cache, as one scan's entries see it."""

    images: np.ndarray  # the cache file memory-mapped, read-only: uint8 (N, 3, S, S), every entry
    rows: np.ndarray  # int64: the row of each entry (in scan order) in `images`
    failed: dict[int, str]  # entry index (in scan order) -> why it could not be decoded


def decoded(entries: Sequence[Entry], root: str, size: int, cache_dir: Path, processes: int) -> Decoded:
    """The decoded images of `entries` at `size`: read from the cache, built first when there is
    no finished one (by this process, with `processes` decoding, or by another one: then this one
    waits for it)."""
    keys = _keys(entries, Path(root))
    order = sorted(range(len(keys)), key=keys.__getitem__)  # row -> entry
    labels = [keys[i][3] for i in order]
    name = f"{size}px-{fingerprint(keys, size)}"
    array, sidecar = cache_dir / f"{name}.npy", cache_dir / f"{name}.json"
    found = _finished(array, sidecar, labels, size)
    if found is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache_dir / f"{name}.lock", "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
            found = _finished(array, sidecar, labels, size)  # built by the process we waited for
            if found is None:
                build(array, sidecar, [str(entries[i].path) for i in order], labels, size, processes)
                found = _finished(array, sidecar, labels, size)
                if found is None:
                    raise RuntimeError(f"the image cache just written does not read back: {array}")
    images, failed_rows = found
    rows = np.empty(len(order), dtype=np.int64)
    rows[order] = np.arange(len(order))
    return Decoded(images=images, rows=rows, failed={order[row]: why for row, why in failed_rows.items()})


def _keys(entries: Sequence[Entry], root: Path) -> list[tuple[bytes, int, int, int]]:
    """(relative path, size, mtime_ns, label) of each entry: what the cache depends on."""
    keys = []
    for entry in entries:
        rel = entry.path.relative_to(root) if entry.path.is_relative_to(root) else entry.path
        try:
            stat = entry.path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # gone since the scan: its decoding fails and says why
            size = mtime = -1
        keys.append((os.fsencode(rel), size, mtime, entry.label))
    return keys


def fingerprint(keys: Sequence[tuple[bytes, int, int, int]], size: int) -> str:
    """A name for these files decoded at `size`: it changes when any file, label or the format does."""
    digest = hashlib.sha256(b"tui-hpo decoded images v%d size %d\n" % (FORMAT_VERSION, size))
    for rel, nbytes, mtime, label in sorted(keys):
        digest.update(b"%s\0%d\0%d\0%d\n" % (rel, nbytes, mtime, label))
    return digest.hexdigest()[:32]


def _finished(array: Path, sidecar: Path, labels: list[int], size: int) -> tuple[np.ndarray, dict[int, str]] | None:
    """The memory-mapped array and the failed rows of a finished cache; None when there is none
    (missing, unfinished, truncated, or written for other files)."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        images = np.load(array, mmap_mode="r")  # a truncated array does not map (ValueError)
        complete = array.stat().st_size == images.offset + images.nbytes
        failed = {int(row): str(why) for row, _path, why in meta["failed"]}
        valid = (complete and meta["version"] == FORMAT_VERSION and meta["labels"] == labels
                 and images.dtype == np.uint8 and images.shape == (len(labels), 3, size, size)
                 and meta["kept"] + len(failed) == len(labels) and all(0 <= row < len(labels) for row in failed))
    except (OSError, ValueError, KeyError, TypeError):  # missing, or not what this format writes
        return None
    return (images, failed) if valid else None


def build(array: Path, sidecar: Path, paths: list[str], labels: list[int], size: int, processes: int) -> None:
    """Decode `paths` into `array` (row i: paths[i]) and write the sidecar; the caller holds the lock."""
    started = time.perf_counter()
    for stale in array.parent.glob(f".{array.name}.tmp-*"):  # left by a build that died; we hold the lock
        stale.unlink(missing_ok=True)
    tmp = array.with_name(f".{array.name}.tmp-{os.getpid()}")
    try:
        out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
        with open(tmp, "r+b") as fh:
            if hasattr(os, "posix_fallocate"):  # a full disk fails here, not as SIGBUS inside the mapping
                os.posix_fallocate(fh.fileno(), 0, out.offset + out.nbytes)
            del out
            chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
            failed = dict(item for part in _decode_all(str(tmp), chunks, size, processes) for item in part)
            os.fsync(fh.fileno())
        os.replace(tmp, array)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"version": FORMAT_VERSION, "size": size, "count": len(paths), "kept": len(paths) - len(failed),
            "labels": labels, "failed": [[row, paths[row], why] for row, why in sorted(failed.items())]}
    write_atomic(sidecar, json.dumps(meta))
    log.info("decoded %d images at %dx%d into %s in %.1f s (%d unreadable)", len(paths), size, size, array,
             time.perf_counter() - started, len(failed))


def _decode_all(array: str, chunks: list[list[str]], size: int, processes: int) -> list[list[tuple[int, str]]]:
    """Decode each chunk into its rows of `array`: in this process when that is quicker than
    starting a pool, else in `processes` processes. Returns each chunk's failures."""
    starts = [i * CHUNK for i in range(len(chunks))]
    sizes = [size] * len(chunks)
    arrays = [array] * len(chunks)
    if processes <= 1 or len(chunks) * CHUNK < PARALLEL_MIN:
        return list(map(_decode_chunk, arrays, starts, chunks, sizes))
    # fork on Linux, as DataLoader workers start: a spawned or forkserver child would first import
    # the caller's main module again (the worker's: torch, timm, optuna). The children only decode
    # with PIL and write through numpy, touching none of the caller's threads, locks or CUDA state.
    method = "fork" if sys.platform == "linux" else "spawn"  # fork is unsafe on macOS
    with ProcessPoolExecutor(min(processes, len(chunks)), mp_context=multiprocessing.get_context(method),
                             initializer=_ignore_interrupts) as pool:
        return list(pool.map(_decode_chunk, arrays, starts, chunks, sizes))


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group: the worker stops after the build, the pool must not die inside it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_chunk(array: str, start: int, paths: list[str], size: int) -> list[tuple[int, str]]:
    """Decode `paths` into rows start.. of the array file; the rows (and reasons) that failed."""
    out = np.load(array, mmap_mode="r+")
    failed = []
    for offset, path in enumerate(paths):
        try:
            out[start + offset] = decode(path, size)
        except Exception as exc:  # truncated data behind a valid header: skip and report
            failed.append((start + offset, f"unreadable ({exc.__class__.__name__})"))
    return failed  # the rows reach the disk with the builder's fsync, once for all chunks
