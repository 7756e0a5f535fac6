"""NVML readings that never raise: no driver simply means no NVIDIA GPU.

Modelled on nvitop's `nvmlQuery`: NVML is initialised on first use, and any call that fails
returns a default instead of raising, so a probe or a monitor tick cannot crash on a machine
without (or with a broken) NVIDIA driver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ok": False, "module": None}


def _nvml() -> Any | None:
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _state["module"], _state["ok"] = pynvml, True
            except Exception:  # no library, no driver, no permission: all mean "no NVIDIA GPU"
                _state["ok"] = False
        return _state["module"] if _state["ok"] else None


def query(func: Callable[..., Any], *args: Any, default: Any = None) -> Any:
    try:
        value = func(*args)
    except Exception:
        return default
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU: the pid lets a viewer name the trial it runs."""

    pid: int
    used_mb: float | None  # None where NVML cannot tell (Windows WDDM, some containers)


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str | None
    util_percent: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    temperature_c: float | None
    power_w: float | None
    processes: tuple[GpuProcess, ...] = ()


def available() -> bool:
    return _nvml() is not None


def driver_version() -> str | None:
    nv = _nvml()
    return query(nv.nvmlSystemGetDriverVersion) if nv else None


def cuda_driver_version() -> str | None:
    nv = _nvml()
    if not nv:
        return None
    version = query(nv.nvmlSystemGetCudaDriverVersion_v2)
    return f"{version // 1000}.{version % 1000 // 10}" if isinstance(version, int) else None


def readings() -> list[GpuReading]:
    """One reading per NVIDIA GPU; an empty list without a driver."""
    nv = _nvml()
    if nv is None:
        return []
    out = []
    for index in range(query(nv.nvmlDeviceGetCount, default=0)):
        handle = query(nv.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        util = query(nv.nvmlDeviceGetUtilizationRates, handle)
        mem = query(nv.nvmlDeviceGetMemoryInfo, handle)
        temp = query(nv.nvmlDeviceGetTemperature, handle, 0)  # 0 = NVML_TEMPERATURE_GPU
        power = query(nv.nvmlDeviceGetPowerUsage, handle)
        out.append(GpuReading(
            index=index,
            name=query(nv.nvmlDeviceGetName, handle),
            util_percent=float(util.gpu) if util is not None else None,
            mem_used_mb=mem.used / 2**20 if mem is not None else None,
            mem_total_mb=mem.total / 2**20 if mem is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=power / 1000 if power is not None else None,
            processes=processes(nv, handle),
        ))
    return out


def processes(nv: Any, handle: Any) -> tuple[GpuProcess, ...]:
    """The compute processes on one GPU (CUDA contexts: what training holds), largest first.

    NVML reports pids of its own PID namespace: inside a container that does not share the
    host's, they may name no process here, and the viewer then shows the pid alone."""
    used: dict[int, float | None] = {}
    listing = getattr(nv, "nvmlDeviceGetComputeRunningProcesses", None)  # absent from an old binding
    for proc in (query(listing, handle, default=None) if listing else None) or []:
        mb = proc.usedGpuMemory / 2**20 if proc.usedGpuMemory is not None else None
        before = used.get(int(proc.pid))  # listed once per MIG instance it uses: their sum
        used[int(proc.pid)] = mb if before is None else before + (mb or 0)
    return tuple(sorted((GpuProcess(pid, mb) for pid, mb in used.items()), key=lambda p: -(p.used_mb or 0)))


NVLINK_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS
TOPOLOGY = {0: "same board", 10: "one PCIe switch", 20: "several PCIe switches", 30: "one host bridge",
            40: "one NUMA node", 50: "across NUMA nodes"}  # nvmlGpuTopologyLevel_t


def details(index: int) -> dict[str, Any]:
    """What `tui-hpo gpu check` shows of one GPU beyond `readings`: clocks, power limit, PCIe link
    and NVLink. Each value is None where NVML cannot tell (an old driver, a virtual GPU)."""
    nv = _nvml()
    handle = query(nv.nvmlDeviceGetHandleByIndex, index) if nv else None
    if handle is None:
        return {}
    sm, mem = 1, 2  # NVML_CLOCK_SM, NVML_CLOCK_MEM
    limit = query(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
    links = [query(nv.nvmlDeviceGetNvLinkState, handle, link) for link in range(NVLINK_MAX_LINKS)]
    return {
        "uuid": query(nv.nvmlDeviceGetUUID, handle),
        "sm_clock_mhz": query(nv.nvmlDeviceGetClockInfo, handle, sm),
        "sm_max_clock_mhz": query(nv.nvmlDeviceGetMaxClockInfo, handle, sm),
        "mem_clock_mhz": query(nv.nvmlDeviceGetClockInfo, handle, mem),
        "power_limit_w": limit / 1000 if limit is not None else None,
        "pcie_gen": query(nv.nvmlDeviceGetCurrPcieLinkGeneration, handle),
        "pcie_max_gen": query(nv.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        "pcie_width": query(nv.nvmlDeviceGetCurrPcieLinkWidth, handle),
        "pcie_max_width": query(nv.nvmlDeviceGetMaxPcieLinkWidth, handle),
        "nvlinks_active": sum(1 for state in links if state == 1) if any(s is not None for s in links) else None,
    }


def topology(count: int) -> list[tuple[int, int, str]]:
    """How each pair of GPUs is connected (PCIe switch, host bridge, NUMA node): what data-parallel
    training across them costs. Empty with fewer than two GPUs or without NVML."""
    nv = _nvml()
    if nv is None or count < 2:
        return []
    handles = [query(nv.nvmlDeviceGetHandleByIndex, i) for i in range(count)]
    pairs = []
    for a in range(count):
        for b in range(a + 1, count):
            if handles[a] is None or handles[b] is None:
                continue
            level = query(nv.nvmlDeviceGetTopologyCommonAncestor, handles[a], handles[b])
            if level is not None:
                pairs.append((a, b, TOPOLOGY.get(int(level), f"level {level}")))
    return pairs
