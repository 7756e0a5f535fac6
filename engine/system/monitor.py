"""System readings (CPU, RAM, disk, NVIDIA GPUs) for the samples table, one per tick."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import psutil

from engine.system import nvml


def hostname() -> str:
    return socket.gethostname()


def sample(disk_path: str | Path | None = None) -> dict[str, Any]:
    """A reading shaped as a `hpo_sample` row. CPU figures are since the previous call.

    psutil measures CPU use between calls, so the very first reading of a process is 0.0; the
    engine takes one at start-up and throws it away.
    """
    per_core = psutil.cpu_percent(percpu=True)
    mem = psutil.virtual_memory()
    disk = None
    if disk_path is not None:
        try:
            disk = shutil.disk_usage(disk_path).free / 2**30
        except OSError:
            disk = None
    return {
        "host": hostname(),
        "ts": time.time(),
        "cpu_percent": sum(per_core) / max(1, len(per_core)),
        "cpu_per_core": per_core,
        "ram_percent": mem.percent,
        "ram_used_mb": (mem.total - mem.available) / 2**20,
        "disk_free_gb": disk,
        "gpus": [dataclasses.asdict(r) for r in nvml.readings()],
    }
