"""System gauges: CPU (overall and per core), RAM, disk, and each GPU's use, memory, heat, power."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tui_hpo.db import Sample
from tui_hpo.format import bar, spark


def _style(fraction: float) -> str:
    return "red" if fraction >= 0.9 else ("yellow" if fraction >= 0.7 else "green")


def _row(table: Table, label: str, fraction: float, text: str, width: int) -> None:
    table.add_row(label, Text(bar(fraction, width), style=_style(fraction)), text)


class Gauges(Static):
    """Readings of one or more hosts, newest sample of each."""

    DEFAULT_CSS = "Gauges { height: auto; }"

    def show(self, samples: list[Sample]) -> None:
        if not samples:
            self.update(Text("no recent samples: the engine records one per second while it runs", style="dim"))
            return
        # label (5) + bar + value (9), two gaps: the bar takes what is left of the panel
        width = max(4, self.content_size.width - 16) if self.content_size.width else 12
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True, min_width=5)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, justify="right", min_width=7)
        for sample in samples:
            if len(samples) > 1:
                table.add_row(Text(sample.host, style="bold underline"), "", "")
            _row(table, "CPU", sample.cpu_percent / 100, f"{sample.cpu_percent:3.0f}%", width)
            if sample.cpu_per_core:
                table.add_row("cores", Text(spark(list(sample.cpu_per_core))[: width + 6], style="cyan"), "")
            _row(table, "RAM", sample.ram_percent / 100, f"{sample.ram_percent:3.0f}%", width)
            for gpu in sample.gpus:
                util = (gpu.get("util_percent") or 0) / 100
                used, total = gpu.get("mem_used_mb") or 0, gpu.get("mem_total_mb") or 0
                _row(table, f"GPU{gpu['index']}", util, f"{util * 100:3.0f}%", width)
                if total:
                    _row(table, "mem", used / total, f"{used / 1024:.0f}/{total / 1024:.0f}G", width)
                extra = " ".join(p for p in (
                    f"{gpu['temperature_c']:.0f}C" if gpu.get("temperature_c") is not None else "",
                    f"{gpu['power_w']:.0f}W" if gpu.get("power_w") is not None else "") if p)
                if extra:
                    table.add_row("", Text(extra, style="dim"), "")
            if sample.disk_free_gb is not None:
                table.add_row("disk", Text(f"{sample.disk_free_gb:.0f} GiB free", style="dim"), "")
        self.update(table)
