"""GPU figures from the system samples (fake NVML readings: the same rows a GPU machine writes):
busy share, GPU-hours and peak memory for `summary`, the dashboard and each trial."""

from __future__ import annotations

from typing import Any

import pytest

from engine.insights.gpu import describe, gpu_usage


def sample(ts: float, *utils: float, host: str = "gpu-box", mem: float = 1000.0) -> dict[str, Any]:
    return {"host": host, "ts": ts, "gpus": [{"index": i, "util_percent": u, "mem_used_mb": mem + i}
                                             for i, u in enumerate(utils)]}


def test_a_cpu_machine_has_no_gpu_figures() -> None:
    assert gpu_usage([{"host": "vm", "ts": 1.0, "gpus": []}, {"host": "vm", "ts": 2.0, "gpus": []}]) is None
    assert gpu_usage([]) is None


def test_busy_share_gpu_hours_and_peak_memory() -> None:
    rows = [sample(t, 100 if t % 2 else 0, 20, mem=2048 * (t == 3)) for t in range(0, 3601)]
    usage = gpu_usage(rows)
    assert usage is not None
    assert usage["busy_percent"] == pytest.approx(35.0, abs=0.1)
    assert usage["gpus"] == 2 and usage["gpu_hours"] == pytest.approx(2.0)
    assert usage["peak_mem_mb"] == 2049.0
    assert describe(usage) == "busy 35% over 2.00 GPU-hours (2 GPUs), peak memory 2.0 GB"
    only_second = gpu_usage(rows, indices=[1])
    assert only_second is not None and only_second["busy_percent"] == 20 and only_second["gpus"] == 1


def test_gaps_are_not_counted_and_hosts_add_up() -> None:
    rows = [sample(0, 80), sample(1, 80), sample(1000, 80), sample(1001, 80)]  # the engine was off between
    usage = gpu_usage(rows)
    assert usage is not None and usage["gpu_hours"] == pytest.approx((1 + 5 + 1) / 3600, abs=1e-4)
    two_hosts = gpu_usage([sample(0, 10, host="a"), sample(1, 10, host="a"), sample(0, 30, host="b"),
                           sample(1, 30, host="b")])
    assert two_hosts is not None and two_hosts["gpus"] == 2 and two_hosts["busy_percent"] == 20
    assert two_hosts["gpu_hours"] == pytest.approx(2 / 3600, abs=1e-4)


def test_summary_reports_the_sweeps_gpu_figures(tmp_path) -> None:
    """`tui-hpo summary` over the sweep's span only: samples before its first trial do not count."""
    import json

    from engine.storage import Store
    from tests.conftest import run_cli
    from tests.studies import T0, make_study

    url = make_study(tmp_path, n_trials=6, running=0)
    store = Store(url)
    for t in range(-100, 0):  # the GPU idled before the sweep: not its figure
        store.add_sample(sample(T0 + t, 0.0) | {"cpu_per_core": [], "cpu_percent": 0.0})
    for t in range(0, 31):
        store.add_sample(sample(T0 + t, 60.0, mem=3072) | {"cpu_per_core": [], "cpu_percent": 50.0})
    done = run_cli("summary", "--workdir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    gpu = json.loads(done.stdout)["gpu"]
    assert gpu == {"busy_percent": 60.0, "gpu_hours": pytest.approx(30 / 3600, abs=1e-4), "gpus": 1,
                   "peak_mem_mb": 3072.0}
    table = run_cli("summary", "--workdir", str(tmp_path))
    assert "busy 60% over 0.01 GPU-hours (1 GPU), peak memory 3.0 GB" in table.stdout
