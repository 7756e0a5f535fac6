"""This machine: the platform probe as panels, live gauges every second, and the profile the
engine applies here. Read from the OS and NVML directly: the TUI never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static

from engine.insights.gpu_verdicts import device_verdicts, model_verdicts
from engine.system import benchmarks
from engine.system.benchmarks import Benchmark
from engine.system.platform import PlatformInfo, probe_without_torch, profile
from tui_hpo.db import Sample
from tui_hpo.screens.base import LiveScreen
from tui_hpo.widgets.gauges import Gauges

TICK_S = 1.0
PROFILE_TEXT = {
    "amp": "mixed precision", "compile": "torch.compile", "channels_last": "channels-last memory",
    "pin_memory": "pinned host memory", "batch_multiplier": "batch-size multiplier", "parallel": "parallel trials",
}


class SystemScreen(LiveScreen):
    CSS_PATH = "system.tcss"
    POLL_S = TICK_S

    class Probed(Message, bubble=False):
        def __init__(self, info: PlatformInfo, benches: list[Benchmark]) -> None:
            super().__init__()
            self.info = info
            self.benches = benches  # `tui-hpo gpu benchmark`'s results for this machine's devices

    def compose(self) -> ComposeResult:
        with Horizontal(id="system-top"):
            yield Static(id="system-info", classes="panel")
            with Vertical(id="system-right"):
                yield Gauges(id="system-gauges", classes="panel")
                yield Static(id="system-profile", classes="panel")
        yield Static(id="system-gpus", classes="panel")
        yield Static(id="system-benchmark", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        for widget_id, title in (("#system-info", "platform"), ("#system-gauges", "live"),
                                 ("#system-profile", "profile"), ("#system-gpus", "NVIDIA GPUs"),
                                 ("#system-benchmark", "benchmark")):
            self.query_one(widget_id).border_title = title
        self.probe()
        from engine.system import monitor

        monitor.sample()  # prime psutil: its first CPU reading is always 0

    @work(thread=True, exit_on_error=False, group="system-probe")
    def probe(self) -> None:
        info = probe_without_torch()
        self.post_message(self.Probed(info, machine_benchmarks(info)))

    def read(self) -> dict[str, Any]:
        from engine.system import monitor

        workdir = Path(self.app.workdir)
        return monitor.sample(workdir if workdir.exists() else Path.cwd())

    def show(self, s: dict[str, Any]) -> None:
        self.query_one("#system-gauges", Gauges).show([Sample(
            host=s["host"], ts=s["ts"], cpu_percent=s["cpu_percent"], cpu_per_core=tuple(s["cpu_per_core"]),
            ram_percent=s["ram_percent"], ram_used_mb=s["ram_used_mb"], disk_free_gb=s["disk_free_gb"],
            gpus=tuple(s["gpus"]))])

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
        for column in ("#", "name", "memory", "free", "compute cap.", "bf16", "util", "temp", "power"):
            table.add_column(column)
        for g in info.gpus:
            table.add_row(str(g.index), g.name, f"{g.total_mb / 1024:.1f} GiB",
                          "-" if g.free_mb is None else f"{g.free_mb / 1024:.1f} GiB", g.compute_capability,
                          "yes" if g.bf16 else "no", "-" if g.util_percent is None else f"{g.util_percent:.0f}%",
                          "-" if g.temperature_c is None else f"{g.temperature_c:.0f}C",
                          "-" if g.power_w is None else f"{g.power_w:.0f}W")
        gpus.update(table)


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
