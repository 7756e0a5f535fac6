"""How busy the GPUs were, from the system samples the engine writes every second.

On a GPU server the question after a sweep is not only "which trial won" but "did the GPU work
or wait": a sweep bound by start-up costs, JPEG decoding or compile waits shows a low busy share.
Plain functions over decoded `hpo_sample` rows (each with its `gpus` readings from NVML), shared
by `summary` (the whole sweep), the dashboard header (the last minute) and the workers (one
trial's GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

MAX_GAP_S = 5.0  # a longer gap between samples is time nobody measured (the engine was not running)


def gpu_usage(samples: Sequence[dict[str, Any]], indices: Iterable[int] | None = None) -> dict[str, Any] | None:
    """Busy share (NVML utilisation, mean over samples and GPUs), GPU-hours (measured time x GPUs)
    and peak memory of the GPUs in `samples` (only `indices`, when given); None without any GPU
    reading. Samples of several hosts count each host's GPUs."""
    wanted = set(indices) if indices is not None else None
    utils: list[float] = []
    peak_mb = 0.0
    seconds = 0.0
    gpus: set[tuple[str, int]] = set()
    last_ts: dict[str, float] = {}
    for sample in sorted(samples, key=lambda s: s["ts"]):
        readings = [g for g in sample.get("gpus") or [] if wanted is None or g.get("index") in wanted]
        host = sample.get("host", "")
        if not readings:
            continue
        utils += [float(g["util_percent"]) for g in readings if g.get("util_percent") is not None]
        peak_mb = max([peak_mb, *(float(g["mem_used_mb"]) for g in readings if g.get("mem_used_mb") is not None)])
        gpus |= {(host, int(g.get("index", 0))) for g in readings}
        previous = last_ts.get(host)
        if previous is not None:
            seconds += min(sample["ts"] - previous, MAX_GAP_S) * len(readings)
        last_ts[host] = sample["ts"]
    if not gpus:
        return None
    return {"busy_percent": round(sum(utils) / len(utils), 1) if utils else None,
            "gpu_hours": round(seconds / 3600, 4), "gpus": len(gpus), "peak_mem_mb": round(peak_mb, 1)}


def describe(usage: dict[str, Any]) -> str:
    """One line for people: "busy 63% over 0.42 GPU-hours (1 GPU), peak memory 12.3 GB"."""
    busy = f"busy {usage['busy_percent']:.0f}%" if usage.get("busy_percent") is not None else "busy unknown"
    plural = "GPU" if usage["gpus"] == 1 else "GPUs"
    return (f"{busy} over {usage['gpu_hours']:.2f} GPU-hours ({usage['gpus']} {plural}), peak memory "
            f"{usage['peak_mem_mb'] / 1024:.1f} GB")
