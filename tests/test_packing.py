"""`trials_per_gpu: auto`: when one more trial goes onto a GPU (fake measurements: the engine
feeds the same function NVML's samples and the trials' measured peak memory on a GPU machine)."""

from __future__ import annotations

from dataclasses import replace

from engine.sweep.packing import BUSY_ENOUGH, MAX_PER_GPU, GpuLoad, decide

IDLE_H200 = GpuLoad(index=0, workers=1, busy_percent=15.0, free_mb=140_000.0, peak_trial_mb=2_000.0)


def test_an_idle_big_gpu_takes_another_small_trial() -> None:
    packing = decide(IDLE_H200)
    assert packing.add and not packing.final
    assert packing.reason == "GPU 0: 15% busy, 137 GB free, trials peak at 2.0 GB: trial 2 side by side"


def test_nothing_is_added_before_a_trial_was_measured() -> None:
    packing = decide(replace(IDLE_H200, peak_trial_mb=None))
    assert not packing.add and not packing.final and "waiting for a measured trial" in packing.reason


def test_additions_stop_when_throughput_stops_growing() -> None:
    helped = decide(replace(IDLE_H200, workers=2, busy_percent=40.0, busy_at_last_add=15.0))
    assert helped.add, "the last trial added raised the load: try one more"
    flat = decide(replace(IDLE_H200, workers=3, busy_percent=42.0, busy_at_last_add=40.0))
    assert not flat.add and flat.final
    assert "took it from 40% to 42% busy; throughput stopped growing at 3 trials" in flat.reason


def test_a_busy_gpu_a_full_gpu_and_the_ceiling() -> None:
    busy = decide(replace(IDLE_H200, busy_percent=BUSY_ENOUGH))
    assert not busy.add and busy.final
    full = decide(replace(IDLE_H200, free_mb=2_500.0))
    assert not full.add and not full.final, "memory may free up: ask again later"
    assert "2.4 GB free, one more trial needs 3.1 GB" in full.reason
    ceiling = decide(replace(IDLE_H200, workers=MAX_PER_GPU))
    assert not ceiling.add and ceiling.final


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> None:
        return None


def test_the_engine_packs_a_gpu_from_its_samples_and_trials(tmp_path, monkeypatch) -> None:
    """The engine's side on a fake GPU machine: NVML samples in the database, a finished trial
    with its measured peak on the GPU's first worker; a second worker is spawned on that GPU,
    said as an event, and none more until the new one has finished a trial."""
    import time

    import optuna

    from engine.storage import Store, default_url
    from engine.sweep.engine import Engine, create_or_resume
    from engine.sweep.resolve import resolve_run
    from engine.system import monitor
    from tests.conftest import ROOT
    from tests.test_workers import machine

    resolved = resolve_run(None, str(ROOT / "tests" / "configs" / "tiny.yaml"), {"resources": {"parallel": None}},
                           environ={}, info=machine([140_000]))
    assert resolved.config.resources.trials_per_gpu == "auto"
    url = default_url(tmp_path)
    engine = Engine(resolved, url, tmp_path, "tiny", reporter=None)
    engine.study = create_or_resume(resolved.config, url, "tiny", tmp_path)
    engine.store = Store(url)
    engine.optuna_study = optuna.load_study(study_name="tiny", storage=url)
    engine.plan = [("cuda:0", {"CUDA_VISIBLE_DEVICES": "0"}, 8)]
    engine.procs = [FakeProc(4242)]
    spawned: list[int] = []

    def spawn(slot: int) -> FakeProc:
        spawned.append(slot)
        return FakeProc(5000 + slot)

    monkeypatch.setattr(engine, "_spawn", spawn)
    now = time.time()
    for t in range(15):
        engine.store.add_sample({"host": monitor.hostname(), "ts": now - t, "cpu_percent": 10.0, "cpu_per_core": [],
                                 "ram_percent": 10.0, "ram_used_mb": 1.0, "disk_free_gb": 1.0,
                                 "gpus": [{"index": 0, "util_percent": 20.0, "mem_used_mb": 3_000.0,
                                           "mem_total_mb": 143_000.0}]})
    engine._pack()
    assert spawned == [], "no trial has finished: nothing measured yet"
    engine.optuna_study.add_trial(optuna.create_trial(
        value=0.9, params={}, distributions={},
        user_attrs={"worker": f"{monitor.hostname()}:4242", "peak_mem_mb": 2_048.0}))
    engine._pack()
    assert spawned == [1] and engine.plan[1] == engine.plan[0], "a second worker on the same GPU"
    events = [e["message"] for e in engine.store.events_of(engine.study.study_id)]
    assert events[-1] == "packing: GPU 0: 20% busy, 137 GB free, trials peak at 2.0 GB: trial 2 side by side"
    engine._pack()
    assert spawned == [1], "the new worker has not finished a trial: its effect is not measured yet"
