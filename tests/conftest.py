"""Shared fixtures: a CLI runner in a real subprocess, workdirs, and small image datasets."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.config.layers import SEED_HABITS

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).resolve().parent / "configs"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist several tests run at once, each starting engines and workers. One torch
    thread per training process: with a thread per core each, they outnumber the cores several
    times over, and every parallel operator then waits for its threads' turns (four sweeps at once
    on two cores: 32 s with one thread each, 48 s with two). OpenMP threads that spin while they
    wait would steal each other's time; passive ones sleep."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # this process's own torch (tests that train in-process)
        os.environ.setdefault("TUI_HPO__RESOURCES__THREADS_PER_WORKER", "1")  # what its commands start
    else:  # one user cache (models already checked) for this run's tests, not the user's own
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        fonts = Path(os.environ.get("MPLCONFIGDIR") or cache / "matplotlib")  # kept: matplotlib's font list
        os.environ["MPLCONFIGDIR"] = str(fonts)
        if not list(fonts.glob("fontlist-*.json")):  # built once here, not as a line on a test's stderr
            subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], capture_output=True)
        os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="tui-hpo-test-cache-")


# The tests that take longest, first: xdist hands tests out in collection order, and a minute-long
# test collected last would run alone at the end while the other workers idle. The files whose
# tests run on one worker (an xdist group) first, the largest first; then the files of the longest
# tests, which any worker takes. By the suite's own durations (CI, 2026-12-02).
LONGEST_FIRST = ("test_tune.py", "test_stats.py", "test_results.py", "test_postgres.py", "test_ensemble.py",
                 "test_gpu_profile.py", "test_predict.py", "test_fuzz.py",
                 "test_sweep.py", "test_crashes.py", "test_disk.py", "test_tui.py", "test_bad_input.py",
                 "test_e2e_tmux.py", "test_command.py", "test_workers.py", "test_own_validation.py",
                 "test_gpu_benchmark.py", "test_gpu_batch.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`tui-hpo ARGS` as a user runs it: a fresh process, output captured (so not a terminal)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__") and k not in SEED_HABITS}
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "120")
    return subprocess.run([sys.executable, "-m", "tui_hpo.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or ROOT)


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`tui-hpo ARGS` in this process, for the commands that read a study (no workers, no signals):
    the same code and the same one-line errors, without a fresh interpreter's seconds of imports.
    An exception the command did not turn into an exit code fails the test with its traceback."""
    from click.testing import CliRunner

    from tui_hpo.cli import main

    hermetic: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TUI_HPO__") or k in SEED_HABITS}
    result = CliRunner().invoke(main, list(args), env={**hermetic, "COLUMNS": "120", **(env or {})}, terminal_width=120)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def listed_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, names: list[str]) -> None:
    """timm's model list, as a check that imported timm leaves it (engine.system.timm_names), in a
    user cache of this test's own (the run's shared one holds the whole list): the wizard lists
    these without importing timm."""
    from engine.system import timm_names

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    timm_names.remember(timm_names.Listed(names, []))


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    return run_cli


@pytest.fixture
def tiny_config() -> Path:
    return CONFIGS / "tiny.yaml"


def write_png(path: Path, value: int, size: tuple[int, int] = (12, 12), mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    array = np.clip(rng.normal(value, 20, (*size[::-1], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(array).convert(mode).save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two easily separable classes (dark and bright), mixed sizes and modes, plus broken files."""
    root = tmp_path / "images"
    for i in range(24):
        write_png(root / "dark" / f"d{i}.png", 40, size=(12 + i % 3, 12), mode="RGB" if i % 2 else "L")
        write_png(root / "bright" / f"b{i}.jpg", 210, size=(16, 10 + i % 4))
    (root / "dark" / "empty.png").write_bytes(b"")
    (root / "dark" / "notes.txt").write_text("not an image")
    (root / "bright" / "fake.png").write_bytes(b"this is not a png at all")
    good = (root / "dark" / "d0.png").read_bytes()
    (root / "bright" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture
def csv_dataset(tmp_path: Path) -> Path:
    """The CSV layout: train.csv (ID,target) beside an image folder, with bad rows."""
    root = tmp_path / "csvdata"
    images = root / "train"
    rows = ["ID,target"]
    for i in range(30):
        label = i % 2
        write_png(images / f"img{i}.png", 40 if label == 0 else 210)
        rows.append(f"img{i}.png,{label}")
    rows += ["missing.png,0", "../escape.png,1", "/etc/passwd,0", "img1.png,1"]
    (tmp_path / "escape.png").write_bytes((images / "img0.png").read_bytes())
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def tight_memory(monkeypatch: pytest.MonkeyPatch, most: int = 32) -> list[tuple[int, int, int]]:
    """Fault injection on the CPU, in this process: from the second epoch on, any training batch
    above `most` images raises MemoryError (as a CUDA OOM would), so each attempt has trained its
    first epoch before it fails. Returns the (batch, accumulation steps, epoch) of every epoch tried."""
    from engine.training import fit

    real, seen = fit.train_one_epoch, []

    def train_one_epoch(loop, data, idx, cfg, epoch, *args, **kwargs):
        seen.append((cfg.batch_size, cfg.accum_steps, epoch))
        if cfg.batch_size > most and epoch >= 1:
            raise MemoryError("injected: batch too large for this device")
        return real(loop, data, idx, cfg, epoch, *args, **kwargs)

    monkeypatch.setattr(fit, "train_one_epoch", train_one_epoch)
    return seen
