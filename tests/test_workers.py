"""Many workers: eight on one SQLite file without a single lock error, and trials packed onto GPUs
by free memory (a fake device list: the planning is the same code a GPU machine runs)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from engine.sweep.engine import worker_plan
from engine.sweep.resolve import resolve_run
from engine.system.platform import GpuInfo, PlatformInfo
from tests.conftest import ROOT, run_cli

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def machine(free_mb: list[float]) -> PlatformInfo:
    gpus = [GpuInfo(index=i, name="Fake GPU", total_mb=40960, free_mb=free, compute_capability="8.0", bf16=True)
            for i, free in enumerate(free_mb)]
    return PlatformInfo(os="Linux", hostname="gpu-box", python="3.11", versions={}, cpu_model="x", physical_cores=16,
                        logical_cores=32, ram_total_gb=128, ram_available_gb=100, cuda_available=True,
                        cuda_version="12.8", driver_version="570", gpus=gpus, platform="cuda")


GPU_SWEEP = "name: gpu\ntrain: {model: test_resnet, epochs: 1}\nsearch_space: {lr: {low: 1.0e-3, high: 1.0e-2}}\n"


@pytest.fixture(autouse=True)
def gpu_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep that leaves parallelism to the platform profile, as a user's usually does."""
    (tmp_path / "gpu.yaml").write_text(GPU_SWEEP)
    monkeypatch.chdir(tmp_path)


def visible_devices(flags: dict, free_mb: list[float]) -> list[str]:
    info = machine(free_mb)
    resolved = resolve_run(None, "gpu.yaml", flags, environ={}, info=info)
    return [env["CUDA_VISIBLE_DEVICES"] for _device, env, _threads in worker_plan(resolved.config, info, "cuda")]


def test_one_trial_per_gpu_by_default_and_k_packed_freest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    free = [10_000, 30_000, 20_000]
    assert visible_devices({}, free) == ["1", "2", "0"]
    assert visible_devices({"resources": {"trials_per_gpu": 2}}, free) == ["1", "2", "0", "1", "2", "0"]
    # Fewer workers than slots: the freest GPUs take them.
    assert visible_devices({"resources": {"parallel": 2, "trials_per_gpu": 2}}, free) == ["1", "2"]
    # resources.gpus picks devices by the index this process sees.
    assert visible_devices({"resources": {"gpus": [0, 2]}}, free) == ["2", "0"]


def test_cuda_visible_devices_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert visible_devices({}, [5_000, 9_000, 7_000]) == ["5", "7", "3"]


def test_trials_per_gpu_flag_and_a_missing_gpu() -> None:
    info = machine([1_000])
    from engine.config import flags_layer

    flags = flags_layer(trials_per_gpu=3)
    resolved = resolve_run(None, "gpu.yaml", flags, environ={}, info=info)
    assert resolved.config.resources.parallel == 3
    from engine.errors import ConfigError

    resolved = resolve_run(None, "gpu.yaml", {"resources": {"gpus": [4]}}, environ={}, info=replace(info))
    with pytest.raises(ConfigError, match="none of these GPUs exists here"):
        worker_plan(resolved.config, info, "cuda")


def test_eight_workers_on_one_sqlite_file_never_hit_a_lock(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui", "--n-trials", "16",
                     "--parallel", "8", timeout=600,
                     env={"TUI_HPO__TRAIN__EPOCHS": "3", "TUI_HPO__SEARCH_SPACE__BATCH_SIZE": "null",
                          "TUI_HPO__TRAIN__BATCH_SIZE": "256", "TUI_HPO__DATA__SUBSET": "600"})
    assert result.returncode == 0, result.stderr
    log = (workdir / "tiny" / "engine.log").read_text()
    everything = result.stdout + result.stderr + log
    assert "database is locked" not in everything and "Traceback" not in everything
    with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
        workers = conn.execute("SELECT COUNT(DISTINCT pid) FROM hpo_worker").fetchone()[0]
        labels = conn.execute("SELECT COUNT(DISTINCT value_json) FROM trial_user_attributes "
                              "WHERE key = 'worker'").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert states == {"COMPLETE": 16}
    assert workers == 8 and labels >= 6, "the eight workers shared the trials"
