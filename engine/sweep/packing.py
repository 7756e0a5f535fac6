"""`resources.trials_per_gpu: auto`: how many trials share each GPU, decided from measurements.

Small models leave a big GPU mostly idle (FACTS.md: an H200 sat at 0% in 85% of the quick
sweep's samples; four workers on it ran three times the trials). The engine starts one worker per
GPU and, while the sweep runs, adds another to a GPU when everything measured says it fits and
helps: the GPU is not already busy, its free memory holds one more of the largest trial measured
on it (with headroom), and the worker added last raised its utilisation. It stops adding to a
GPU for good once an addition did not help: throughput stopped growing.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PER_GPU = 8
BUSY_ENOUGH = 90.0  # % NVML utilisation: another trial would only queue behind the others
MIN_GAIN = 5.0  # points of utilisation the worker added last must have brought
HEADROOM = 1.3  # free memory must hold the largest measured trial peak times this...
CONTEXT_MB = 600.0  # ...plus a CUDA context, which torch's peak does not count


@dataclass(frozen=True)
class GpuLoad:
    """What was measured on one GPU (its physical index) in the last minute or so."""

    index: int
    workers: int
    busy_percent: float | None  # mean utilisation over the recent samples
    free_mb: float | None  # newest sample
    peak_trial_mb: float | None  # the largest peak memory of a recent trial on this GPU
    busy_at_last_add: float | None = None  # utilisation just before the last worker was added to it


@dataclass(frozen=True)
class Packing:
    add: bool
    final: bool  # no more workers for this GPU in this sweep
    reason: str


def decide(gpu: GpuLoad, max_per_gpu: int = MAX_PER_GPU) -> Packing:
    """Whether to start one more worker on `gpu` now."""
    name = f"GPU {gpu.index}"
    if gpu.workers >= max_per_gpu:
        return Packing(False, True, f"{name}: {gpu.workers} trials side by side, the most it takes")
    if gpu.busy_percent is None or gpu.peak_trial_mb is None or gpu.free_mb is None:
        return Packing(False, False, f"{name}: waiting for a measured trial")
    if gpu.busy_at_last_add is not None and gpu.busy_percent - gpu.busy_at_last_add < MIN_GAIN:
        return Packing(False, True, f"{name}: the trial added last took it from {gpu.busy_at_last_add:.0f}% to "
                                    f"{gpu.busy_percent:.0f}% busy; throughput stopped growing at "
                                    f"{gpu.workers} trials")
    if gpu.busy_percent >= BUSY_ENOUGH:
        return Packing(False, True, f"{name}: {gpu.busy_percent:.0f}% busy with {gpu.workers} trial(s)")
    needed = gpu.peak_trial_mb * HEADROOM + CONTEXT_MB
    if gpu.free_mb < needed:
        return Packing(False, False, f"{name}: {gpu.free_mb / 1024:.1f} GB free, one more trial needs "
                                     f"{needed / 1024:.1f} GB")
    return Packing(True, False, f"{name}: {gpu.busy_percent:.0f}% busy, {gpu.free_mb / 1024:.0f} GB free, trials "
                                f"peak at {gpu.peak_trial_mb / 1024:.1f} GB: trial {gpu.workers + 1} side by side")
