"""The System screen's history (braille graphs over 5/30/60 minutes from the samples table),
per-core bars at every width, and GPU memory per process attributed to trials.

GPUs are faked two ways: a fake pynvml behind engine.system.nvml for the sampler, and sample rows
with a `gpus` list (tests/studies.add_samples) for the screen, as the engine writes them.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
from rich.cells import cell_len

from engine.storage import Store
from engine.storage.tables import samples
from engine.system import monitor, nvml
from tests.studies import add_samples, make_study
from tests.test_tui import text_of, wait_for
from tui_hpo import clock
from tui_hpo.app import make_app
from tui_hpo.db import Reader, Sample, WorkerRow
from tui_hpo.history import BINS, History
from tui_hpo.screens.system import SystemScreen, holders
from tui_hpo.widgets.gauges import CoreBars, Gauges, core_bars, core_strip
from tui_hpo.widgets.graph import Graph, braille, fit, levels

NO_PID = 2**22 + 17  # above Linux's largest pid_max: no process has it, as NVML's pids from another namespace


def sample(ts: float, cpu: float = 50.0, gpus: tuple[dict[str, Any], ...] = ()) -> Sample:
    return Sample(host="h", ts=ts, cpu_percent=cpu, cpu_per_core=(cpu,), ram_percent=20.0, ram_used_mb=1.0,
                  disk_free_gb=None, gpus=gpus)


# ----------------------------------------------------------------- the braille graph


def test_braille_fills_dots_from_the_bottom_two_points_a_cell() -> None:
    # one line = four dot levels: 25% is one dot, 100% all four; any load above zero shows a dot
    assert levels([None, 0.0, 25.0, 100.0, 1.0, 250.0], rows=1, high=100.0) == [0, 0, 1, 4, 1, 4]
    # (None, 0) empty -> space; (1 dot left, 4 dots right) -> dots 7 + 4,5,6,8; (1, 4) again
    assert braille([None, 0.0, 25.0, 100.0, 1.0, 250.0], rows=1, high=100.0) == [" \u28f8\u28f8"]
    # two lines (8 levels): 50% fills the lower cell's left column; 100% both lines' right column;
    # 75% the lower cell and half the upper one; an odd count pads its last cell's right column
    assert braille([50.0, 100.0, 75.0], rows=2, high=100.0) == ["\u28b8\u2844", "\u28ff\u2847"]


def test_fit_resamples_to_any_width() -> None:
    values = [10.0, 20.0, None, None, 30.0, 50.0]
    assert fit(values, 3) == [15.0, None, 40.0], "means per point; a point of empty bins stays empty"
    assert fit(values, 12) == [10.0, 10.0, 20.0, 20.0, None, None, None, None, 30.0, 30.0, 50.0, 50.0]
    assert fit([], 4) == [None] * 4


def test_the_graph_and_the_gauges_fill_their_size_and_redraw_at_a_new_one() -> None:
    from textual.app import App, ComposeResult
    from textual.containers import Horizontal

    class Two(App[None]):
        CSS = "Graph, Gauges { width: 1fr; }"

        def compose(self) -> ComposeResult:
            with Horizontal():
                yield Graph()
                yield Gauges()

    def gauge_lines(gauges: Gauges) -> dict[str, str]:
        return {line.split()[0]: line.rstrip() for line in text_of(gauges).splitlines() if line.strip()}

    async def scenario() -> None:
        app = Two()
        async with app.run_test(size=(60, 8)) as pilot:
            graph, gauges = app.query_one(Graph), app.query_one(Gauges)
            graph.plot([100.0 * v / BINS for v in range(BINS)])  # a ramp from 0 to 100%
            gauges.show([Sample(host="h", ts=0.0, cpu_percent=50.0, cpu_per_core=(0.0, 100.0), ram_percent=20.0,
                                ram_used_mb=1.0, disk_free_gb=None, gpus=())])
            await pilot.pause()
            lines = graph.render().plain.split("\n")
            assert len(lines) == 8 and {cell_len(line) for line in lines} == {30}
            assert lines[-1].strip() and not lines[0][:10].strip(), "rising: the left of the top line is empty"
            narrow = gauge_lines(gauges)
            assert narrow["cores"].startswith("cores ··· ███"), "an idle core shows, not a bare label"
            assert len(narrow["CPU"]) <= 30
            await pilot.resize_terminal(100, 3)
            await pilot.pause()
            lines = graph.render().plain.split("\n")
            assert len(lines) == 3 and {cell_len(line) for line in lines} == {50}
            wide = gauge_lines(gauges)
            assert len(narrow["CPU"]) < len(wide["CPU"]) <= 50, "the gauges redraw at their new width"
            graph.plot([None] * BINS)
            assert "no samples" in graph.render().plain

    asyncio.run(scenario())


# ----------------------------------------------------------------- history bins and windows


def test_history_bins_each_window_and_holds_only_short_gaps() -> None:
    history = History()
    now = 1_800_000_000.0
    for t in range(0, 100):  # 100 s of samples at 1 s, then a gap of 60 s, then 10 s more
        history.add(sample(now - 170 + t, cpu=float(t)))
    for t in range(160, 170):
        history.add(sample(now - 170 + t, cpu=99.0, gpus=({"index": 1, "util_percent": 40.0, "mem_used_mb": 10.0,
                                                           "mem_total_mb": 40.0, "temperature_c": None},)))
    five = history.view(300, now)
    assert set(five) == {"cpu", "ram", "gpu1.util", "gpu1.mem"}, "no temperature reading: no temperature series"
    assert all(len(points) == BINS for points in five.values())
    size = 300 / BINS
    cpu = five["cpu"]
    gap = [cpu[BINS - 1 - int(k / size)] for k in range(15, 55)]  # 15..55 s ago: inside the 60 s gap
    assert all(v is None for v in gap), "a long gap stays empty"
    assert cpu[-1] == 99.0 and cpu[BINS - 1 - int(2.5 / size)] == 99.0, "short gaps between samples are held"
    assert five["gpu1.mem"][-1] == 25.0, "memory in percent of the total"
    assert all(v is None for v in cpu[: BINS - 170 * BINS // 300 - 1]), "before the first sample: nothing"
    hour = history.view(3600, now)["cpu"]  # 7.5 s a bin: the 100 s ramp is about 13 bins of means
    ramp = [v for v in hour[-23:-9] if v is not None]
    assert ramp == sorted(ramp) and len(ramp) >= 12 and 0 < ramp[0] < ramp[-1] < 100


# ----------------------------------------------------------------- per-core bars


def test_core_bars_fit_any_box() -> None:
    loads = [50 + 49 * math.sin(c) for c in range(64)]
    for width, height in ((16, 4), (18, 8), (30, 16), (60, 36), (24, 3), (8, 2)):
        text = core_bars(loads, width, height)
        lines = text.plain.split("\n")
        assert len(lines) <= height and max(cell_len(line) for line in lines) <= width, (width, height)
    wide = core_bars(loads, 60, 36).plain  # two columns of labelled bars with their percent
    assert "63 " in wide and f"{loads[63]:4.0f}%" in wide and len(wide.split("\n")) == 32
    narrow = core_bars(loads, 16, 4).plain  # too narrow for labels: a vertical bar per core, in bands
    assert "%" not in narrow and sum(len(line) for line in narrow.split("\n")) == 64
    assert core_bars([0.0, 0.0], 20, 2).plain.split("\n")[0].startswith("0 "), "idle cores still listed"


def test_the_gauges_core_strip_is_never_a_bare_label() -> None:
    assert core_strip([0.0, 0.0], 12).plain == "··· ···", "idle cores show as dots, three cells each"
    assert core_strip([100.0, 50.0], 12).plain == "███ ▄▄▄"
    many = core_strip([float(c % 100) for c in range(256)], 12).plain.split("\n")
    assert len(many) == 2 and all(cell_len(line) == 12 for line in many), "averaged onto two lines"


# ----------------------------------------------------------------- the sampler, with a fake pynvml


class FakeNvml:
    """The pynvml calls the monitor makes, for one GPU with two processes (one listed twice, as
    MIG instances list it) and NVML's 'not available' memory for a third."""

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        return SimpleNamespace(used=30 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:
        return 61

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return 410_000

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA H100"

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[Any]:
        return [SimpleNamespace(pid=4242, usedGpuMemory=2 * 2**30), SimpleNamespace(pid=77, usedGpuMemory=None),
                SimpleNamespace(pid=4242, usedGpuMemory=2**30), SimpleNamespace(pid=99, usedGpuMemory=20 * 2**30)]


def test_the_sampler_records_gpu_processes_and_old_rows_still_decode(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "_state", {"tried": True, "ok": True, "module": FakeNvml()})
    reading = monitor.sample()
    gpu = reading["gpus"][0]
    assert (gpu["util_percent"], gpu["mem_used_mb"], gpu["power_w"]) == (87.0, 30 * 1024, 410.0)
    assert gpu["processes"] == ({"pid": 99, "used_mb": 20 * 1024.0}, {"pid": 4242, "used_mb": 3 * 1024.0},
                                {"pid": 77, "used_mb": None}), "largest first; a pid's MIG instances summed"
    url = make_study(tmp_path, n_trials=1, running=0)
    store = Store(url)
    store.add_sample(reading)
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a row written before processes were recorded
        conn.execute(samples.insert().values(host="old", ts=reading["ts"], cpu_percent=1.0, cpu_per_core="[1.0]",
                                             ram_percent=1.0, ram_used_mb=1.0, gpus='[{"index": 0}]'))
    engine.dispose()
    reader = Reader(url)
    try:
        stored = {s.host: s for s in reader.samples_between(reading["ts"] - 1, reading["ts"] + 1)}
    finally:
        reader.close()
    assert stored[reading["host"]].gpus[0]["processes"] == [{"pid": 99, "used_mb": 20480.0},
                                                            {"pid": 4242, "used_mb": 3072.0},
                                                            {"pid": 77, "used_mb": None}]
    assert stored["old"].gpus[0]["processes"] == []


# ----------------------------------------------------------------- processes to trials


def test_gpu_processes_are_attributed_to_the_trials_their_workers_run() -> None:
    me = psutil.Process()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gpus = ({"index": 0, "processes": [{"pid": child.pid, "used_mb": 1024.0}, {"pid": NO_PID, "used_mb": 4096.0}]},
                {"index": 1, "processes": [{"pid": os.getpid(), "used_mb": None}]})
        workers = {os.getpid(): WorkerRow(os.getpid(), "demo", 7, started=time.time()),
                   NO_PID: WorkerRow(NO_PID, "other", None, started=time.time())}
        found = holders(gpus, workers)
        assert [(h.gpu, h.pid, h.study, h.trial) for h in found] == [
            (0, NO_PID, "other", None),  # not visible here (another PID namespace): its pid alone names it
            (0, child.pid, "demo", 7),  # a program the worker started: attributed through its parent
            (1, os.getpid(), "demo", 7)]
        assert found[0].name == f"pid {NO_PID}" and found[1].name == psutil.Process(child.pid).name()
        # a worker row left behind by a crash, whose pid now belongs to a process started after it
        stale = {os.getpid(): WorkerRow(os.getpid(), "demo", 7, started=me.create_time() - 100)}
        assert [(h.study, h.trial) for h in holders(gpus[1:], stale)] == [(None, None)]
    finally:
        child.kill()
        child.wait()


# ----------------------------------------------------------------- the screen


def test_the_system_screen_shows_stored_history_gpus_and_their_trials(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setattr(nvml, "readings", lambda: [])  # this machine's own GPUs (if any) stay out of it
    real = monitor.sample
    monkeypatch.setattr(monitor, "sample", lambda *a: real(*a) | {"cpu_per_core": [float(c) for c in range(64)]})
    url = make_study(tmp_path, n_trials=6, running=2)
    host = monitor.hostname()
    store = Store(url)
    for where, pid, number in ((host, NO_PID, 6), (host, NO_PID + 1, 7), ("elsewhere", NO_PID + 9, 3)):
        store.update_worker(store.register_worker(1, where, pid, "cuda"), state="running", trial_number=number)
    store.close()
    add_samples(url, host, time.time(), seconds=900, gpus=2,  # 15 minutes of an engine that ran here
                processes={0: [(NO_PID, 30 * 1024.0), (NO_PID + 9, 800.0)], 1: [(NO_PID + 1, 12 * 1024.0)]})

    def filled(screen: SystemScreen, graph: str, older_than_s: float) -> bool:
        """Whether the graph has points older than this (only the database can have those)."""
        values = screen.query_one(graph, Graph).values
        return any(v is not None for v in values[: int(BINS * (1 - older_than_s / screen.window))])

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="system")  # a fresh app: all history comes from the database
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            assert isinstance(screen, SystemScreen)
            await wait_for(pilot, lambda: screen.view is not None and screen.gpu_rows)
            await pilot.pause()
            assert filled(screen, "#graph-cpu", 240) and filled(screen, "#graph-gpu1-power", 240)
            assert sorted(screen.gpu_rows) == [0, 1] and not screen.has_class("-no-gpu")
            procs = text_of(screen.query_one("#system-procs"))
            assert "demo #6" in procs and "demo #7" in procs and "30.0 GiB" in procs and "12.0 GiB" in procs
            assert "demo #3" not in procs, "the same pid on another host is another process"
            assert screen.query_one("#system-procs").border_title == "GPU processes: 2 trials hold 42.0 GiB"
            assert "GPU0 " in screen.query_one("#graph-gpu0-util", Graph).border_title
            bar = text_of(screen.query_one("#system-bar"))
            assert "last 5 min" in bar and "64 cores" in bar and "2 GPUs" in bar
            # w cycles the window: 30 min shows the quarter hour of samples, 60 min too, then 5 again
            for minutes in (30, 60, 5):
                await pilot.press("w")
                await wait_for(pilot, lambda m=minutes: f"last {m} min" in text_of(screen.query_one("#system-bar")))
            await pilot.press("w")
            await wait_for(pilot, lambda: screen.view.window == 1800)
            assert filled(screen, "#graph-cpu", 800) and not filled(screen, "#graph-cpu", 1000)
            # two minutes on without a GPU reading: who holds what is no longer known
            monkeypatch.setattr(clock, "now", lambda: time.time() + 120)
            await wait_for(pilot, lambda: "no GPU reading" in text_of(screen.query_one("#system-procs")))
            # per-core bars fit the panel at 80 and at 200 columns
            for size in ((80, 24), (200, 50)):
                await pilot.resize_terminal(*size)
                await pilot.pause(0.3)
                cores = screen.query_one(CoreBars)
                lines = cores.render().plain.split("\n")
                assert len(lines) <= cores.content_size.height
                assert max(cell_len(line) for line in lines) <= cores.content_size.width
            assert " 63 " in cores.render().plain, "at 200 columns each core has its labelled bar"
            # i shows the machine's panels (beside the graphs at 200 columns, in their place at 80)
            assert screen.query_one("#system-about").display
            await pilot.resize_terminal(80, 24)
            await pilot.pause()
            assert not screen.query_one("#system-about").display
            await pilot.press("i")
            assert screen.query_one("#system-about").display and not screen.query_one("#system-history").display
        assert not app.worker_errors

    asyncio.run(scenario())
