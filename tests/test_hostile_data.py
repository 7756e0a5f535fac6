"""Hostile datasets: path escapes, links out of the data folder, huge and undecodable names, a 1 GB
"image". The scanner must report every bad entry with a reason and open none of them, and a
sweep on such data must still run.

"Never opened" is proved by recording every path handed to `open`/`os.open`/`PIL.Image.open`
during the scan: permissions cannot prove it, since the tests may run as root.
"""

from __future__ import annotations

import builtins
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.config import DataConfig
from engine.datasets.scan import scan
from engine.errors import DataError
from tests.conftest import CONFIGS, run_cli, write_png

GB = 1 << 30
HUGE_ID = "x" * 100_000 + ".png"


@dataclass(frozen=True)
class Hostile:
    base: Path  # tmp_path: holds the dataset and, beside it, what must never be read
    csv_root: Path  # data/ with train.csv (latin-1) and train/ (the images)
    folder_root: Path  # images/<class>/... (the ImageFolder layout)
    outside: Path  # real PNGs outside both roots, reachable only through links or escapes

    @property
    def forbidden(self) -> list[Path]:
        """Files no scan may open: outside the roots, or too large to be a photo."""
        return [self.outside, self.csv_root / "train" / "big.png", self.folder_root / "b" / "big.png",
                Path("/etc/passwd")]


def sparse(path: Path, size: int) -> None:
    """A file of `size` bytes that takes no disk space (all holes)."""
    with open(path, "wb") as fh:
        fh.truncate(size)


def undecodable(folder: Path, raw: bytes) -> Path:
    """A path in `folder` whose name is bytes that are not UTF-8 (Linux allows any bytes)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))


@pytest.fixture
def hostile(tmp_path: Path) -> Hostile:
    outside = tmp_path / "outside"
    write_png(outside / "secret.png", 40)
    write_png(outside / "dir" / "s.png", 210)

    # The CSV layout: good rows of two classes, then every kind of bad row, in latin-1.
    csv_root = tmp_path / "data"
    images = csv_root / "train"
    rows = [b"ID,target"]
    for i in range(20):
        write_png(images / f"img{i}.png", 40 if i % 2 == 0 else 210)
        rows.append(f"img{i}.png,{i % 2}".encode())
    (images / "link_out.png").symlink_to(outside / "secret.png")
    (images / "linkdir").symlink_to(outside / "dir", target_is_directory=True)
    sparse(images / "big.png", GB)
    write_png(undecodable(images, b"caf\xe9.png"), 40)  # named in latin-1 on disk, as in the CSV
    rows += [b"../../etc/passwd,0", b"/etc/passwd,1", HUGE_ID.encode() + b",0", b"caf\xe9.png,0",
             b"img3.png,0", b"link_out.png,0", b"linkdir/s.png,1", b"big.png,1", b"\xff\xfe,1"]
    (csv_root / "train.csv").write_bytes(b"\n".join(rows) + b"\n")

    # The ImageFolder layout: links to a file, to a folder and as a whole class, a 1 GB file,
    # and a broken file whose name holds a non-UTF-8 byte, a newline and a terminal escape.
    folder_root = tmp_path / "images"
    for i in range(10):
        write_png(folder_root / "a" / f"{i}.png", 40)
        write_png(folder_root / "b" / f"{i}.png", 210)
    (folder_root / "a" / "link.png").symlink_to(outside / "secret.png")
    (folder_root / "a" / "linkdir").symlink_to(outside / "dir", target_is_directory=True)
    (folder_root / "evil").symlink_to(outside / "dir", target_is_directory=True)
    sparse(folder_root / "b" / "big.png", GB)
    undecodable(folder_root / "b", b"bad\xe9\n\x1b[31m.png").write_bytes(b"junk")
    return Hostile(tmp_path, csv_root, folder_root, outside)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file path opened from now on (builtins/io/os open and PIL.Image.open), resolved."""
    from PIL import Image

    paths: list[Path] = []

    def recording(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str | bytes | os.PathLike):
                paths.append(Path(os.fsdecode(file)).resolve())
            return original(file, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", recording(builtins.open))
    monkeypatch.setattr(io, "open", recording(io.open))
    monkeypatch.setattr(os, "open", recording(os.open))
    monkeypatch.setattr(Image, "open", recording(Image.open))
    return paths


def assert_never_opened(opened: list[Path], hostile: Hostile, root: Path) -> None:
    assert any(p.is_relative_to(root) for p in opened), "the recorder saw no image opened at all"
    for forbidden in hostile.forbidden:
        touched = [p for p in opened if p == forbidden or p.is_relative_to(forbidden)]
        assert not touched, f"opened {touched}"


@pytest.fixture
def timed() -> Iterator[Callable[[], float]]:
    start = time.monotonic()
    yield lambda: time.monotonic() - start


def test_csv_rows_that_escape_or_break_are_reported_and_never_opened(
        hostile: Hostile, opened: list[Path], timed: Callable[[], float]) -> None:
    found = scan(DataConfig(path=str(hostile.csv_root)))
    assert timed() < 10, "the 1 GB file was read"  # a scan of 20 small images takes milliseconds
    assert_never_opened(opened, hostile, hostile.csv_root / "train")
    assert found.layout == "csv" and found.count == 20 and found.classes == ["0", "1"]
    assert dict(found.skipped) == {
        "../../etc/passwd": "outside the data folder",
        "/etc/passwd": "outside the data folder",
        HUGE_ID[:80]: "missing",  # shown cut short; the name is too long for any file system
        "caf\ufffd.png": "missing",  # a latin-1 name: not UTF-8, so never the same file
        "img3.png": "duplicate id",
        "link_out.png": "outside the data folder",
        "linkdir/s.png": "outside the data folder",
        "big.png": "too large (1024 MB)",
        "\ufffd\ufffd": "missing",
    }
    assert len(found.skipped) == 9  # and each once


def test_imagefolder_links_and_huge_files_are_reported_and_never_opened(
        hostile: Hostile, opened: list[Path], timed: Callable[[], float]) -> None:
    found = scan(DataConfig(path=str(hostile.folder_root)))
    assert timed() < 10, "the 1 GB file was read"
    assert_never_opened(opened, hostile, hostile.folder_root)
    assert found.layout == "imagefolder" and found.count == 20 and found.classes == ["a", "b"]
    assert dict(found.skipped) == {
        "a/link.png": "outside the data folder",
        "a/linkdir": "outside the data folder",  # a linked folder is named, not silently left out
        "evil/s.png": "outside the data folder",  # a whole class folder linked from outside
        "b/big.png": "too large (1024 MB)",
        "b/bad\\udce9\\n\\x1b[31m.png": "not an image",  # escaped: one line, no terminal escape
    }


def test_a_linked_folder_inside_the_root_is_reported_not_followed(hostile: Hostile) -> None:
    (hostile.folder_root / "b" / "again").symlink_to(hostile.folder_root / "a", target_is_directory=True)
    (hostile.folder_root / "a" / "loop").symlink_to(hostile.folder_root / "a", target_is_directory=True)
    reasons = dict(scan(DataConfig(path=str(hostile.folder_root))).skipped)
    assert reasons["b/again"] == reasons["a/loop"] == "linked folder, not followed"


def test_a_labels_path_that_is_not_a_file_is_refused(hostile: Hostile, timed: Callable[[], float]) -> None:
    with pytest.raises(DataError, match=r"data\.labels: is not a regular file"):
        scan(DataConfig(path=str(hostile.csv_root), labels="/dev/zero"))  # reading it would never end
    assert timed() < 5


def test_a_sweep_on_hostile_data_runs_and_reports_every_skipped_entry(hostile: Hostile) -> None:
    workdir = hostile.base / "runs"
    result = run_cli("run", "--config", str(CONFIGS / "tiny.yaml"), "--data", str(hostile.csv_root),
                     "--n-trials", "1", "--workdir", str(workdir), "--no-tui", timeout=240)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert "(20 images, 2 classes)" in result.stdout
    assert "skipped 9 file(s): ../../etc/passwd (outside the data folder)" in result.stdout
    assert "trial 0 complete" in result.stdout
    log = (workdir / "tiny" / "engine.log").read_text()
    skipped = [line for line in log.splitlines() if "data: skipped" in line]
    assert len(skipped) == 9
    for name in ("/etc/passwd", "link_out.png", "linkdir/s.png", "big.png (too large (1024 MB))", "img3.png"):
        assert any(name in line for line in skipped), name
