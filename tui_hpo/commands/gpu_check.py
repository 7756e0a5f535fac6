"""`tui-hpo gpu check`: every GPU as NVML sees it, what the profile will do on this machine and
why, and advice in words per card. Reads NVML and torch's build info only (no torch import, so it
answers in a second), except to ask CUDA whether this driver can run this torch."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click


def check_report() -> dict[str, Any]:
    """Everything `gpu check` shows, as one plain dict (the --json output)."""
    from engine.system import nvml
    from engine.system.gpu_classes import advice, explain_profile, memory_class, tf32
    from engine.system.platform import probe_for_sweep, probe_without_torch, profile, torch_cuda_build

    seen = probe_without_torch()  # every card NVML sees, whatever this torch can use
    planned = probe_for_sweep() or seen
    installed, cuda_build = torch_cuda_build()
    notes = list(planned.notes)
    if not seen.gpus:
        notes.append("no NVIDIA GPU: NVML found no driver or no card" if not nvml.available()
                     else "NVML is loaded but lists no GPU")
    elif cuda_build is not None:
        from engine.training.devices import cuda_problem

        problem = cuda_problem()
        if problem:
            notes.append(problem)
    gpus = []
    for gpu in seen.gpus:
        details = nvml.details(gpu.index)
        gpus.append({**asdict(gpu), **details, "tf32": tf32(gpu), "memory_class": memory_class(gpu.total_mb).name,
                     "advice": advice(gpu, details)})
    resources = profile(planned, planned.platform)["resources"]
    return {
        "platform": planned.platform,
        "driver": nvml.driver_version(),
        "cuda_driver": nvml.cuda_driver_version(),
        "torch_cuda": cuda_build if installed else None,
        "gpus": gpus,
        "topology": [{"gpus": [a, b], "link": link} for a, b, link in nvml.topology(len(seen.gpus))],
        "profile": resources,
        "why": explain_profile(resources, planned.platform, planned.gpus),
        "notes": notes,
    }


def _value(value: Any, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def render(report: dict[str, Any]) -> list[Any]:
    """The report as rich renderables: one panel per GPU, the topology, the profile and why."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    head = Text()
    head.append("platform ", style="bold").append(report["platform"], style="bold green")
    head.append(f"   driver {report['driver'] or '-'}   CUDA (driver) {report['cuda_driver'] or '-'}   "
                f"torch built for CUDA {report['torch_cuda'] or '- (CPU build)'}")
    out.append(head)
    for note in report["notes"]:
        out.append(Text(f"note: {note}", style="yellow"))
    for g in report["gpus"]:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        free = f", {g['free_mb'] / 1024:.1f} GiB free" if g["free_mb"] is not None else ""
        clocks = (f"SM {_value(g.get('sm_clock_mhz'))} of {_value(g.get('sm_max_clock_mhz'))} MHz, "
                  f"memory {_value(g.get('mem_clock_mhz'))} MHz")
        pcie = (f"gen {_value(g.get('pcie_gen'))} x{_value(g.get('pcie_width'))} (max gen "
                f"{_value(g.get('pcie_max_gen'))} x{_value(g.get('pcie_max_width'))})")
        for key, value in (
                ("memory", f"{g['total_mb'] / 1024:.1f} GiB ({g['memory_class']}){free}"),
                ("compute", f"capability {g['compute_capability']}, bf16 {'yes' if g['bf16'] else 'no'}, "
                            f"TF32 {'yes' if g['tf32'] else 'no'}"),
                ("state", f"{_value(g['util_percent'], '%')} busy, {_value(g['temperature_c'], ' C')}, "
                          f"{_value(g['power_w'], ' W')} of {_value(g.get('power_limit_w'), ' W')}"),
                ("clocks", clocks), ("PCIe", pcie),
                ("NVLink", f"{g['nvlinks_active']} links active" if g.get("nvlinks_active") else "none")):
            grid.add_row(key, value)
        for line in g["advice"]:
            grid.add_row("advice", line)
        out.append(Panel(grid, title=f"GPU {g['index']}: {g['name']}", title_align="left"))
    if report["topology"]:
        topo = Table(title="Topology", title_justify="left", show_header=False)
        for pair in report["topology"]:
            topo.add_row(f"GPU {pair['gpus'][0]} - GPU {pair['gpus'][1]}", pair["link"])
        out.append(topo)
    why = Table(title=f"Profile on this machine: {report['platform']}", title_justify="left", show_header=False)
    why.add_column(style="bold")
    why.add_column()
    for line in report["why"]:
        key, _, reason = line.partition(": ")
        why.add_row(key, reason)
    out.append(why)
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(as_json: bool) -> None:
    """Every GPU (driver, CUDA, compute capability, bf16/TF32, memory, clocks, temperature,
    power, PCIe and NVLink), the profile tui-hpo applies here and why, and advice per card."""
    report = check_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console

    console = Console()
    for renderable in render(report):
        console.print(renderable)
