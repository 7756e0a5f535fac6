"""The decoded-image cache: built once per (files, size), read by every later load and by every
other process, rebuilt when the files change or the cache is unfinished, and served the same
whether the images sit in memory or stay memory-mapped."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.config import DataConfig
from engine.datasets import image_cache
from engine.datasets.image_cache import decode
from engine.datasets.scan import scan, splits
from engine.training.tensors import ImageData, load

SIZE = 24
CLASSES = ("cat", "dog", "eel")
BROKEN = "broken.jpg"


def write_image(path: Path, seed: int, size: tuple[int, int] = (28, 28), mode: str = "RGB") -> None:
    """A smooth gradient with noise: compressible, and different for each seed."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size[0])[None, :, None] * rng.uniform(50, 200, 3)
    pixels = np.clip(ramp + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def cut_short(path: Path, source: Path) -> None:
    """A JPEG whose header passes the scan and whose pixels do not decode: cut just after the
    start of its scan data (the 0xFFDA marker)."""
    whole = source.read_bytes()
    path.write_bytes(whole[: whole.index(b"\xff\xda") + 20])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes of PNGs and JPEGs in mixed sizes and modes, and one JPEG cut short."""
    root = tmp_path / "images"
    for c, name in enumerate(CLASSES):
        for i in range(10):
            write_image(root / name / f"{i:02d}{'.png' if i % 2 else '.jpg'}", seed=100 * c + i,
                        size=(20 + i, 28 - i % 5), mode="L" if i % 3 == 0 else "RGB")
    cut_short(root / "dog" / BROKEN, root / "dog" / "00.jpg")
    return root


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The cache arrays this test built, in order."""
    built: list[Path] = []
    real = image_cache.build

    def counted(array: Path, *args: Any) -> None:
        built.append(array)
        real(array, *args)

    monkeypatch.setattr(image_cache, "build", counted)
    return built


def load_folder(root: Path, cache: Path, limit_mb: int = 2048) -> ImageData:
    cfg = DataConfig(path=str(root), cache_limit_mb=limit_mb)
    return load(scan(cfg), cfg, SIZE, cache)


def decoded_one_by_one(data: ImageData) -> np.ndarray:
    return np.stack([decode(str(entry.path), SIZE) for entry in data.scan.entries])


def test_the_cache_is_built_once_and_then_read(folder: Path, tmp_path: Path, builds: list[Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = load_folder(folder, cache)
    assert len(builds) == 1
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".lock", ".npy"]
    assert np.array_equal(first.images(SIZE).numpy(), decoded_one_by_one(first))

    def no_decoding(*_args: Any) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_cache, "build", no_decoding)
    monkeypatch.setattr(image_cache, "decode", no_decoding)
    second = load_folder(folder, cache)
    assert torch.equal(first.images(SIZE), second.images(SIZE)) and torch.equal(first.labels, second.labels)
    assert second.scan.entries == first.scan.entries and second.skipped == first.skipped


def test_a_changed_or_added_file_is_decoded_into_a_new_cache(folder: Path, tmp_path: Path,
                                                              builds: list[Path]) -> None:
    cache = tmp_path / "cache"
    load_folder(folder, cache)
    changed = folder / "cat" / "03.png"
    before = changed.stat()
    write_image(changed, seed=999, size=(23, 28))
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # what a copy or an edit does
    data = load_folder(folder, cache)
    assert len(builds) == 2
    at = [e.path for e in data.scan.entries].index(changed.resolve())
    assert np.array_equal(data.images(SIZE)[at].numpy(), decode(str(changed), SIZE))
    write_image(folder / "eel" / "new.png", seed=7)
    assert len(load_folder(folder, cache).labels) == len(data.labels) + 1
    load_folder(folder, cache)  # nothing changed since: read, not built
    assert len(builds) == 3 and len(set(builds)) == 3  # three caches, side by side


def load_in_child(root: str, cache: str, out: str, barrier: Any) -> None:
    """One worker's load, started at the same moment as another's, with decoding slowed down so
    that both look for the cache while it is being built. Notes each build in builds.txt."""
    real_build, real_decode = image_cache.build, image_cache.decode

    def counted(array: Path, *args: Any) -> None:
        with open(Path(out).parent / "builds.txt", "a") as fh:
            fh.write(f"{os.getpid()}\n")
        real_build(array, *args)

    def slow(path: str, size: int) -> np.ndarray:
        time.sleep(0.02)
        return real_decode(path, size)

    image_cache.build, image_cache.decode = counted, slow
    cfg = DataConfig(path=root)
    found = scan(cfg)
    barrier.wait(timeout=60)
    data = load(found, cfg, SIZE, Path(cache))
    np.savez(out, images=data.images(SIZE).numpy(), labels=data.labels.numpy(),
             skipped=np.array([path for path, _why in data.skipped]))


def test_two_processes_loading_at_once_decode_once(folder: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"out{k}.npz" for k in range(2)]
    children = [ctx.Process(target=load_in_child, args=(str(folder), str(tmp_path / "cache"), str(out), barrier))
                for out in outs]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert len((tmp_path / "builds.txt").read_text().split()) == 1
    first, second = (np.load(out) for out in outs)
    for key in ("images", "labels", "skipped"):
        assert np.array_equal(first[key], second[key])
    assert first["skipped"].tolist() == [str((folder / "dog" / BROKEN).resolve())]


@pytest.mark.parametrize("damage", ["truncated", "extended", "no sidecar"])
def test_an_unfinished_or_damaged_cache_is_built_again(folder: Path, tmp_path: Path, builds: list[Path],
                                                       damage: str) -> None:
    cache = tmp_path / "cache"
    first = load_folder(folder, cache)
    array = builds[0]
    whole = array.stat().st_size
    if damage == "truncated":  # the array shorter than its sidecar says
        os.truncate(array, whole - 1000)
    elif damage == "extended":
        with open(array, "ab") as fh:
            fh.write(b"\0" * 100)
    else:  # a build that died between renaming its array and its sidecar
        array.with_suffix(".json").unlink()
    (cache / f".{array.name}.tmp-1").write_bytes(b"half an array")  # left by a build that died
    second = load_folder(folder, cache)
    assert builds == [array, array] and array.stat().st_size == whole
    assert torch.equal(first.images(SIZE), second.images(SIZE)) and second.skipped == first.skipped
    assert not list(cache.glob(".*.tmp-*"))


def test_unreadable_files_are_reported_alike_from_a_build_and_from_the_cache(folder: Path, tmp_path: Path,
                                                                            builds: list[Path]) -> None:
    cache = tmp_path / "cache"
    built, read = load_folder(folder, cache), load_folder(folder, cache)
    assert len(builds) == 1
    broken = (folder / "dog" / BROKEN).resolve()
    assert built.skipped == read.skipped == [(str(broken), "unreadable (OSError)")]
    for data in (built, read):
        assert len(data.scan.entries) == len(data.labels) == 30 and broken not in {e.path for e in data.scan.entries}
    assert built.scan.entries == read.scan.entries and torch.equal(built.labels, read.labels)


def test_images_follow_the_scan_order_not_the_cache_order(tmp_path: Path) -> None:
    """A CSV lists its files in any order; the cache keeps them sorted by path. Each image and
    label must still be the entry's own, in memory and memory-mapped."""
    root = tmp_path / "csvdata"
    names = [f"img{i:02d}{'.png' if i % 2 else '.jpg'}" for i in range(12)]
    for i, name in enumerate(names):
        write_image(root / "train" / name, seed=i, size=(16 + i, 20))
    cut_short(root / "train" / BROKEN, root / "train" / "img00.jpg")
    listed = [*np.random.default_rng(3).permutation(names).tolist(), BROKEN]
    listed.insert(5, listed.pop())  # the broken file in the middle
    (root / "labels.csv").write_text("ID,target\n" + "".join(f"{n},{int(n < 'img06')}\n" for n in listed))
    cache = tmp_path / "cache"
    for limit_mb in (2048, 0):
        data = load_folder(root, cache, limit_mb)
        assert [e.path.name for e in data.scan.entries] == [n for n in listed if n != BROKEN]
        assert data.skipped == [(str((root / "train" / BROKEN).resolve()), "unreadable (OSError)")]
        xs, ys = zip(*data.batches(np.arange(len(data.labels)), SIZE, 5, False, torch.Generator()), strict=True)
        assert np.array_equal(torch.cat(xs).numpy(), decoded_one_by_one(data))
        assert torch.cat(ys).tolist() == [e.label for e in data.scan.entries]


def test_memory_mapped_batches_equal_in_memory_batches(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    in_memory, mapped = load_folder(folder, cache), load_folder(folder, cache, limit_mb=0)
    assert in_memory.cached and not mapped.cached
    train, _val = splits(in_memory.labels.numpy(), DataConfig())[0]
    for size in (SIZE, 16):  # 16: resized from the cached 24, per batch when mapped
        for shuffle in (True, False):
            ours = list(mapped.batches(train, size, 7, shuffle, torch.Generator().manual_seed(5)))
            theirs = list(in_memory.batches(train, size, 7, shuffle, torch.Generator().manual_seed(5)))
            assert len(ours) == len(theirs) == -(-len(train) // 7)
            for (x1, y1), (x2, y2) in zip(ours, theirs, strict=True):
                assert x1.shape == (len(y1), 3, size, size) and torch.equal(x1, x2) and torch.equal(y1, y2)
        for ours_stat, theirs_stat in zip(mapped.mean_std(size, train), in_memory.mean_std(size, train), strict=True):
            assert torch.allclose(ours_stat, theirs_stat)
    batches = mapped.batches(train, SIZE, 4, True, torch.Generator())
    next(batches)
    batches.close()  # a trial stopped mid-epoch: its prefetching thread ends with it
    assert not [t for t in threading.enumerate() if t.name == "prefetch-batches"]


def test_a_pool_of_processes_decodes_each_file_into_its_own_row(folder: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[int] = []

    class CountedPool(ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs: Any) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(image_cache, "ProcessPoolExecutor", CountedPool)
    monkeypatch.setattr(image_cache, "CHUNK", 4)
    monkeypatch.setattr(image_cache, "PARALLEL_MIN", 0)
    found = scan(DataConfig(path=str(folder)))
    result = image_cache.decoded(found.entries, found.root, SIZE, tmp_path / "cache", processes=2)
    assert pools == [2]
    assert {found.entries[i].path.name: why for i, why in result.failed.items()} == {BROKEN: "unreadable (OSError)"}
    for i, entry in enumerate(found.entries):
        if i not in result.failed:
            assert np.array_equal(result.images[result.rows[i]], decode(str(entry.path), SIZE)), entry.path
