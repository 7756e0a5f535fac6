"""This machine: CPU, RAM and each GPU's use, memory, heat and power as scrolling braille graphs
over the last 5, 30 or 60 minutes (`w`), per-core bars, the GPU processes with the trial each one
runs, and beside them (`i`) the platform probe, the profile the engine applies here and the
stored benchmark.

The history is the samples table of this host, read once at start and then by increments, so it
survives closing the app and attaching again; the screen adds a reading of its own each tick,
so the graphs move also while no sweep runs. Read from the OS and NVML directly: the TUI never
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widgets import Footer, Static

from engine.insights.gpu_verdicts import device_verdicts, model_verdicts
from engine.system import benchmarks, monitor
from engine.system.benchmarks import Benchmark
from engine.system.platform import PlatformInfo, probe_without_torch, profile
from tui_hpo import clock
from tui_hpo.db import Sample, WorkerRow
from tui_hpo.history import WINDOWS_S, History
from tui_hpo.screens.base import LiveScreen
from tui_hpo.widgets.gauges import CoreBars
from tui_hpo.widgets.graph import Graph, nice_ceiling

TICK_S = 1.0
GPU_STALE_S = 30.0  # a GPU reading older than this no longer tells which process holds memory
ABOUT_FROM = 140  # columns from which the machine's panels show beside the graphs without `i`
CORE_COLUMN = 15  # a core in the cores panel: its label, a bar of eight cells, " 100%" and a gap
GPU_GRAPHS = ("util", "mem", "temp", "power")  # a graph each, in this order
PROFILE_TEXT = {
    "amp": "mixed precision", "compile": "torch.compile", "channels_last": "channels-last memory",
    "pin_memory": "pinned host memory", "batch_multiplier": "batch-size multiplier", "parallel": "parallel trials",
}


@dataclass(frozen=True)
class GpuHolder:
    """A process holding memory on a GPU, and the trial it runs (when a worker of ours runs it)."""

    gpu: int
    pid: int
    used_mb: float | None
    name: str  # the process's name, or its pid where this host cannot see it
    study: str | None = None
    trial: int | None = None  # None for a worker between trials


@dataclass(frozen=True)
class SystemView:
    host: str
    window: int
    series: dict[str, list[float | None]]  # fine time bins per graph (tui_hpo.history)
    latest: Sample | None  # the newest reading of this host
    gpus: tuple[dict[str, Any], ...] = ()  # each GPU's newest reading, none if older than GPU_STALE_S
    gpus_ts: float = 0.0  # when that reading was taken
    holders: tuple[GpuHolder, ...] = ()


def holders(gpus: tuple[dict[str, Any], ...], workers: dict[int, WorkerRow]) -> tuple[GpuHolder, ...]:
    """Each GPU process with the trial it runs: the worker with its pid, or (a program a worker
    started, for `objective.command`) with the pid of an ancestor. A worker row counts only for a
    process that already existed when the worker registered, so a pid reused after a crash that
    left its row behind is not taken for the old worker."""
    out = []
    for gpu in gpus:
        for proc in gpu.get("processes") or []:
            pid = int(proc["pid"])
            name, owner = _owner(pid, workers)
            out.append(GpuHolder(gpu=int(gpu.get("index", 0)), pid=pid, used_mb=proc.get("used_mb"), name=name,
                                 study=owner.study if owner else None, trial=owner.trial_number if owner else None))
    return tuple(sorted(out, key=lambda h: (h.gpu, -(h.used_mb or 0))))


def _owner(pid: int, workers: dict[int, WorkerRow]) -> tuple[str, WorkerRow | None]:
    try:
        proc = psutil.Process(pid)
        name = proc.name()
        chain = [proc, *proc.parents()]
    except psutil.Error:  # gone, or in another PID namespace: NVML's pid is all there is
        return f"pid {pid}", workers.get(pid)
    for ancestor in chain:
        worker = workers.get(ancestor.pid)
        try:
            if worker is not None and ancestor.create_time() <= worker.started + 1.0:
                return name, worker
        except psutil.Error:
            continue
    return name, None


class SystemScreen(LiveScreen):
    CSS_PATH = "system.tcss"
    POLL_S = TICK_S
    BINDINGS = [Binding("w", "window", "window 5/30/60 min"), Binding("i", "about", "machine")]

    class Probed(Message, bubble=False):
        def __init__(self, info: PlatformInfo, benches: list[Benchmark]) -> None:
            super().__init__()
            self.info = info
            self.benches = benches  # `tui-hpo gpu benchmark`'s results for this machine's devices

    def __init__(self) -> None:
        super().__init__()
        self.history = History()  # filled in the poll's worker thread, read there only
        self.window = WINDOWS_S[0]
        self.loaded_until: float | None = None  # the newest stored sample read so far
        self.about: bool | None = None  # `i`: the machine's panels shown or hidden; None: by width
        self.view: SystemView | None = None
        self.gpu_rows: dict[int, Horizontal] = {}  # GPU index -> its row of graphs
        self.gpu_graphs: dict[int, dict[str, Graph]] = {}  # GPU index -> its graphs by GPU_GRAPHS key

    def compose(self) -> ComposeResult:
        yield Static(id="system-bar", classes="bar")
        with Horizontal(id="system-body"):
            with VerticalScroll(id="system-history"):
                with Horizontal(id="system-host", classes="system-row"):
                    yield Graph(id="graph-cpu", classes="panel")
                    yield CoreBars(id="system-cores", classes="panel")
                    yield Graph(id="graph-ram", classes="panel")
                yield Static(id="system-procs", classes="panel")
            with VerticalScroll(id="system-about"):
                yield Static(id="system-info", classes="panel")
                yield Static(id="system-profile", classes="panel")
                yield Static(id="system-gpus", classes="panel")
                yield Static(id="system-benchmark", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        for widget_id, title in (("#system-info", "platform"), ("#system-profile", "profile"),
                                 ("#system-gpus", "NVIDIA GPUs"), ("#system-benchmark", "benchmark"),
                                 ("#graph-cpu", "CPU"), ("#system-cores", "cores"), ("#graph-ram", "RAM"),
                                 ("#system-procs", "GPU processes")):
            self.query_one(widget_id).border_title = title
        self.query_one("#system-procs").display = False
        self.add_class("-no-gpu")  # until a reading with GPUs comes
        self._layout()
        self.probe()
        monitor.sample()  # prime psutil: its first CPU reading is always 0

    def on_resize(self, event: Resize) -> None:
        self._layout()
        self._fit_rows()

    def action_window(self) -> None:
        """The next time window (5, 30, 60 minutes): the bins of each are kept, so it is instant."""
        self.window = WINDOWS_S[(WINDOWS_S.index(self.window) + 1) % len(WINDOWS_S)]
        self.poll()

    def action_about(self) -> None:
        self.about = not self._about_shown()
        self._layout()

    def _about_shown(self) -> bool:
        return self.about if self.about is not None else self.size.width >= ABOUT_FROM

    def _layout(self) -> None:
        """The machine's panels beside the graphs on a wide screen; on a narrow one, `i` shows them
        in place of the graphs (side by side, both would be too cramped to read)."""
        about = self._about_shown()
        self.query_one("#system-about").display = about
        self.query_one("#system-history").display = not about or self.size.width >= ABOUT_FROM
        self.set_class(about and self.size.width >= ABOUT_FROM, "-beside")
        self._size_cores()

    @work(thread=True, exit_on_error=False, group="system-probe")
    def probe(self) -> None:
        info = probe_without_torch()
        self.post_message(self.Probed(info, machine_benchmarks(info)))

    # ------------------------------------------------------------ polling

    def read(self) -> SystemView:
        host, now, window = monitor.hostname(), clock.now(), self.window
        reader = self.app.reader
        since = self.loaded_until if self.loaded_until is not None else now - max(WINDOWS_S)
        stored = [s for s in reader.samples_between(since, now, host)
                  if self.loaded_until is None or s.ts > self.loaded_until]
        for sample in stored:
            self.history.add(sample)
        if stored:
            self.loaded_until = stored[-1].ts
        workdir = Path(self.app.workdir)
        own = to_sample(monitor.sample(workdir if workdir.exists() else Path.cwd()))
        self.history.add(own)
        readings = [*stored[-30:], own]  # the newest of either source is current
        latest = max(readings, key=lambda s: s.ts)
        with_gpus = [s for s in readings if s.gpus]
        newest = max(with_gpus, key=lambda s: s.ts) if with_gpus else None
        # a tick without a GPU reading (the engine's come each second, ours only where NVML works
        # for this user) keeps the last one, until it is too old to say who holds what
        gpus, gpus_ts = (newest.gpus, newest.ts) if newest else self._gpus_before()
        if now - gpus_ts > GPU_STALE_S:
            gpus = ()
        return SystemView(host=host, window=window, series=self.history.view(window, now), latest=latest, gpus=gpus,
                          gpus_ts=gpus_ts, holders=holders(gpus, reader.workers_on(host)) if gpus else ())

    def _gpus_before(self) -> tuple[tuple[dict[str, Any], ...], float]:
        return (self.view.gpus, self.view.gpus_ts) if self.view is not None else ((), 0.0)

    def show(self, view: SystemView) -> None:
        self.view = view
        self.query_one("#system-bar", Static).update(self._bar(view))
        latest = view.latest
        cpu, ram = self.query_one("#graph-cpu", Graph), self.query_one("#graph-ram", Graph)
        cpu.plot(view.series.get("cpu", []))
        ram.plot(view.series.get("ram", []))
        if latest is not None:
            cpu.border_title = f"CPU {latest.cpu_percent:.0f}%"
            ram.border_title = f"RAM {latest.ram_percent:.0f}% {latest.ram_used_mb / 1024:.1f}G"
            self.query_one(CoreBars).show(latest.cpu_per_core)
        self._size_cores()
        self._show_gpus(view)

    def _bar(self, view: SystemView) -> Text:
        """The host, the window (and the next one, for `w`), what the graphs cover."""
        following = WINDOWS_S[(WINDOWS_S.index(view.window) + 1) % len(WINDOWS_S)]
        text = Text.assemble((view.host, "bold"), ": the last ", (f"{view.window // 60} min", "bold"),
                             (f" (w: {following // 60} min)", "dim"))
        gpus = self._gpu_indices(view)
        parts = [f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "no NVIDIA GPU"]
        latest = view.latest
        if latest is not None:
            cores = len(latest.cpu_per_core)
            parts.insert(0, f"{cores} core{'s' if cores != 1 else ''}")
            if latest.disk_free_gb is not None:
                parts.append(f"disk {latest.disk_free_gb:.0f} GiB free")
        for part in parts:
            text.append(" · ", style="dim")
            text.append(part)
        return text

    @staticmethod
    def _gpu_indices(view: SystemView) -> list[int]:
        indices = {int(g.get("index", 0)) for g in view.gpus}
        indices |= {int(key[3:].partition(".")[0]) for key in view.series if key.startswith("gpu")}
        return sorted(indices)

    def _show_gpus(self, view: SystemView) -> None:
        indices = self._gpu_indices(view)
        history = self.query_one("#system-history", VerticalScroll)
        procs = self.query_one("#system-procs", Static)
        new = [i for i in indices if i not in self.gpu_rows]
        for i in new:
            self.gpu_graphs[i] = {key: Graph(id=f"graph-gpu{i}-{key}", classes="panel") for key in GPU_GRAPHS}
            self.gpu_rows[i] = Horizontal(*self.gpu_graphs[i].values(), id=f"gpu-row-{i}", classes="system-row")
        if new:  # rows are added, never removed: a GPU gone from the window only hides its row
            history.mount_all([self.gpu_rows[i] for i in new], before=procs)
        for i, row in self.gpu_rows.items():
            row.display = i in indices
        by_index = {int(g.get("index", 0)): g for g in view.gpus}
        for index in indices:
            self._show_gpu(index, view, by_index.get(index, {}))
        procs.display = bool(indices)
        if self.has_class("-no-gpu") == bool(indices):
            self.set_class(not indices, "-no-gpu")
            self._size_cores()
        self._fit_rows()
        if indices:
            procs.update(holders_table(view.holders, bool(view.gpus)))
            held = sum(h.used_mb or 0 for h in view.holders if h.study is not None)
            trials = len({(h.study, h.trial) for h in view.holders if h.study is not None})
            procs.border_title = "GPU processes" + (f": {trials} trial{'s' if trials != 1 else ''} hold "
                                                    f"{held / 1024:.1f} GiB" if trials else "")

    def _show_gpu(self, index: int, view: SystemView, gpu: dict[str, Any]) -> None:
        series = {key: view.series.get(f"gpu{index}.{key}", []) for key in GPU_GRAPHS}
        graphs = self.gpu_graphs[index]
        util, used, total = gpu.get("util_percent"), gpu.get("mem_used_mb"), gpu.get("mem_total_mb")
        temp, power = gpu.get("temperature_c"), gpu.get("power_w")
        graphs["util"].plot(series["util"])
        graphs["util"].border_title = f"GPU{index} {_num(util, '%')}"
        graphs["util"].border_subtitle = str(gpu.get("name") or "")
        graphs["mem"].plot(series["mem"])
        graphs["mem"].border_title = "mem " + (f"{used / 1024:.0f}/{total / 1024:.0f} GiB" if used is not None
                                               and total else "-")
        graphs["temp"].plot(series["temp"])
        graphs["temp"].border_title = f"temp {_num(temp, 'C')}"
        graphs["temp"].border_subtitle = "0-100C"
        known = [v for v in series["power"] if v is not None]
        top = nice_ceiling(max(known)) if known else 100.0
        graphs["power"].plot(series["power"], high=top)
        graphs["power"].border_title = f"power {_num(power, 'W')}"
        graphs["power"].border_subtitle = f"0-{top:.0f}W"

    def _fit_rows(self) -> None:
        """Rows share the column's height while each keeps its minimum; past that (eight GPUs on a
        small terminal) each takes its minimum and the column scrolls. Fractions alone would not
        do: in a scrolling column each would take a whole screen."""
        history = self.query_one("#system-history")
        procs = self.query_one("#system-procs")
        rows = [self.query_one("#system-host"), *(row for row in self.gpu_rows.values() if row.display)]
        room = history.size.height - (procs.outer_size.height if procs.display else 0)
        fits = room >= sum(int(row.styles.min_height.value) if row.styles.min_height else 0 for row in rows)
        for row in rows:
            row.styles.height = "1fr" if fits else row.styles.min_height

    def _size_cores(self) -> None:
        """The cores' column as wide as their bars need at its height, at most a third of the row."""
        cores = self.query_one(CoreBars)
        row = self.query_one("#system-host")
        inner = max(1, row.size.height - 2)
        columns = -(-max(1, len(cores.values)) // inner)
        need = columns * (CORE_COLUMN + len(str(max(0, len(cores.values) - 1)))) + 2
        width = max(14, min(need, row.size.width // 3 or need))
        row.styles.grid_columns = f"1fr {width}" if self.has_class("-no-gpu") else f"2fr {width} 1fr"

    # ------------------------------------------------------------ the machine's panels

    @on(Probed)
    def show_info(self, message: Probed) -> None:
        info = message.info
        self.query_one("#system-benchmark", Static).update(benchmark_text(message.benches))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        versions = ", ".join(f"{k} {v}" for k, v in info.versions.items() if v)
        for key, value in (
                ("OS", info.os), ("host", info.hostname), ("Python", info.python), ("packages", versions),
                ("CPU", info.cpu_model),
                ("cores", f"{info.logical_cores} usable, {info.physical_cores or '?'} physical"),
                ("RAM", f"{info.ram_total_gb:.1f} GiB, {info.ram_available_gb:.1f} GiB available"),
                ("CUDA", f"driver {info.driver_version}, CUDA {info.cuda_version}" if info.cuda_available
                 else "no NVIDIA GPU or driver"),
                ("Apple MPS", "Apple silicon: MPS" if info.mps_available else "not available"),
                ("workspace", str(Path(self.app.workdir).resolve()))):
            grid.add_row(key, value)
        self.query_one("#system-info", Static).update(grid)
        prof = Table.grid(padding=(0, 2))
        prof.add_column(style="bold")
        prof.add_column()
        prof.add_row("platform", Text(info.platform, style="bold green"))
        for key, value in profile(info, info.platform)["resources"].items():
            prof.add_row(PROFILE_TEXT.get(key, key), str(value))
        self.query_one("#system-profile", Static).update(prof)
        gpus = self.query_one("#system-gpus", Static)
        if not info.gpus:
            gpus.update(Text("none found: training runs on the " + ("MPS device" if info.mps_available else "CPU"),
                             style="dim"))
            return
        table = Table(box=None, header_style="bold")
        for column in ("#", "name", "memory", "compute cap.", "bf16"):
            table.add_column(column)
        for g in info.gpus:
            table.add_row(str(g.index), g.name, f"{g.total_mb / 1024:.1f} GiB", g.compute_capability,
                          "yes" if g.bf16 else "no")
        gpus.update(table)


def to_sample(reading: dict[str, Any]) -> Sample:
    """A monitor reading (engine.system.monitor.sample) as the reader's rows are."""
    return Sample(host=reading["host"], ts=reading["ts"], cpu_percent=reading["cpu_percent"],
                  cpu_per_core=tuple(reading["cpu_per_core"]), ram_percent=reading["ram_percent"],
                  ram_used_mb=reading["ram_used_mb"], disk_free_gb=reading["disk_free_gb"],
                  gpus=tuple(reading["gpus"]))


def holders_table(rows: tuple[GpuHolder, ...], known: bool) -> Table | Text:
    """The GPU processes, largest first per GPU; `known` is False without a recent GPU reading."""
    if not known:
        return Text(f"no GPU reading in the last {GPU_STALE_S:.0f} s: the engine records them while a sweep runs",
                    style="dim")
    if not rows:
        return Text("no process holds GPU memory", style="dim")
    table = Table(box=None, header_style="bold", padding=(0, 1), expand=True)
    table.add_column("GPU", justify="right", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("trial", no_wrap=True)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("process", ratio=1, no_wrap=True, overflow="ellipsis")
    for h in rows:
        trial = (Text(f"{h.study} #{h.trial}", style="bold") if h.trial is not None else
                 Text(f"{h.study} (between trials)", style="dim") if h.study is not None else Text("-", style="dim"))
        table.add_row(str(h.gpu), "?" if h.used_mb is None else f"{h.used_mb / 1024:.1f} GiB", trial, str(h.pid),
                      h.name)
    return table


def _num(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.0f}{unit}"


def machine_benchmarks(info: PlatformInfo) -> list[Benchmark]:
    """The stored benchmarks of this machine's GPUs (by NVML's name, which is torch's) and CPU."""
    stored = benchmarks.load_all()
    keys = dict.fromkeys([*(g.name for g in info.gpus), benchmarks.device_key("cpu", info.cpu_model)])
    return [stored[k] for k in keys if k in stored]


def benchmark_text(benches: list[Benchmark]) -> Text:
    if not benches:
        return Text("no benchmark yet: run `tui-hpo gpu benchmark`", style="dim")
    text = Text()
    for bench in benches:
        if text:
            text.append("\n")
        text.append(f"{bench.device}", style="bold")
        text.append(f"  {bench.date[:10]}, torch {bench.torch_version}\n", style="dim")
        text.append("; ".join(device_verdicts(bench)) + "\n")
        for model in bench.models:
            for line in model_verdicts(model, bench.kind):
                text.append(f"  {line}\n")
    text.rstrip()
    return text
