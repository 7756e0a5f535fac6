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
class GpuReading:
    index: int
    name: str | None
    util_percent: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    temperature_c: float | None
    power_w: float | None


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
        ))
    return out
