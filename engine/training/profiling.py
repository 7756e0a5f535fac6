"""Where a training step's time goes: `tui-hpo gpu profile`.

A few steps of a config's training, built and stepped by the same code as `fit`
(`build_loop`, `train_step`), run under `torch.profiler`: a table of the operators that took the
most time, the share of each phase of a step (data, forward, backward, optimizer, labelled with
`record_function`), and a Chrome trace of the profiled steps for Perfetto, chrome://tracing or
TensorBoard's profiler plugin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, record_function

from engine.config import SweepConfig
from engine.training.fit import Runtime, build_loop, train_step
from engine.training.single import prepare
from engine.training.tensors import ImageData

PHASES = ("data", "forward", "backward", "optimizer")
WARMUP_STEPS = 2  # the first steps pay for lazy initialisation and cuDNN's algorithm search
TOP_OPS = 15
DATA_BOUND = 0.3  # a data share above this is worth saying: the model waits for its input


@dataclass(frozen=True)
class OpTime:
    """One operator over the profiled steps."""

    name: str
    calls: int
    self_cpu_ms: float
    self_device_ms: float | None  # its CUDA kernels; None where CUDA is not measured


@dataclass(frozen=True)
class Profiled:
    """What `profile_training` measured, with what the numbers cannot show (`notes`)."""

    device: str
    steps: int
    warmup: int
    ops: list[OpTime]  # the top operators, by self CUDA time on a GPU, else by self CPU time
    phase_ms: dict[str, float]  # each phase's wall time over the profiled steps
    trace: Path
    notes: list[str] = field(default_factory=list)

    @property
    def phase_share(self) -> dict[str, float]:
        total = sum(self.phase_ms.values())
        return {name: round(ms / total, 4) if total else 0.0 for name, ms in self.phase_ms.items()}


def _endless(data: ImageData, idx: np.ndarray, size: int, batch_size: int, generator: torch.Generator,
             pin_memory: bool, resident: torch.device | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches as an epoch serves them, epoch after epoch: a small dataset may have
    fewer batches than the steps to profile."""
    while True:
        yield from data.batches(idx, size, batch_size, True, generator, pin_memory, resident)


def _phase_label(device: torch.device) -> Callable[[str], contextlib.AbstractContextManager]:
    """`record_function(name)`; on a GPU it also waits for the phase's kernels before the phase
    ends, so that each phase's time is the time its work took, not the time to queue it."""

    @contextlib.contextmanager
    def label(name: str) -> Iterator[None]:
        with record_function(name):
            yield
            if device.type == "cuda":
                torch.cuda.synchronize(device)

    return label


def _top_ops(events: list, on_cuda: bool, top: int) -> list[OpTime]:
    """The operators (CPU-side events: on a GPU each carries its kernels' time) with the most self
    time, leaving out our phase labels and the profiler's step markers."""
    ops = [e for e in events if e.device_type == DeviceType.CPU and e.key not in PHASES
           and not e.key.startswith("ProfilerStep")]
    ops.sort(key=lambda e: e.self_device_time_total if on_cuda else e.self_cpu_time_total, reverse=True)
    return [OpTime(e.key, e.count, round(e.self_cpu_time_total / 1000, 3),
                   round(e.self_device_time_total / 1000, 3) if on_cuda else None) for e in ops[:top]]


def profile_training(config: SweepConfig, platform: str, trace: Path, steps: int = 5, warmup: int = WARMUP_STEPS,
                     top: int = TOP_OPS, cache_dir: Path | None = None) -> Profiled:
    """Train `config.train` for `warmup` steps, then profile `steps` more (training batches; the
    optimizer steps on every `accum_steps`-th) and write their Chrome trace to `trace`."""
    run = prepare(config, platform, cache_dir)
    cfg = config.train
    runtime = Runtime.from_resources(config.resources, run.device)
    train_idx = run.split[0]
    loop = build_loop(cfg, run.data, train_idx, runtime)
    loop.model.train()
    loop.optimizer.zero_grad(set_to_none=True)
    on_cuda = loop.device.type == "cuda"
    batches = _endless(run.data, train_idx, int(cfg.image_size), cfg.batch_size, loop.generator,
                       runtime.pin_memory, loop.resident)
    label = _phase_label(loop.device)
    trace.parent.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_cuda else [])]
    with torch.profiler.profile(activities=activities,
                                schedule=torch.profiler.schedule(wait=0, warmup=warmup, active=steps, repeat=1),
                                on_trace_ready=lambda p: p.export_chrome_trace(str(trace))) as prof:
        for micro in range(1, warmup + steps + 1):
            with label("data"):
                xb, yb = next(batches)
            train_step(loop, xb, yb, cfg, micro, label)
            prof.step()
    events = list(prof.key_averages())
    # A label's CPU-side range spans its phase (the GPU's copy of it, on a CUDA device, only its kernels).
    phase_ms = {name: 0.0 for name in PHASES}
    for e in events:
        if e.key in phase_ms and e.device_type == DeviceType.CPU:
            phase_ms[e.key] += round(e.cpu_time_total / 1000, 3)
    ops = _top_ops(events, on_cuda, top)
    return Profiled(device=run.device, steps=steps, warmup=warmup, ops=ops, phase_ms=phase_ms, trace=trace,
                    notes=_notes(loop.device, runtime, cfg.accum_steps, steps, ops))


def _notes(device: torch.device, runtime: Runtime, accum_steps: int, steps: int, ops: list[OpTime]) -> list[str]:
    """What the numbers do not show."""
    notes = []
    if device.type == "cpu":
        notes.append("CUDA kernels are not measured on this machine (no GPU): all times are CPU times")
    elif device.type == "mps":
        notes.append("MPS kernels are not measured (torch.profiler sees the CPU side only)")
    else:
        notes.append("each phase waits for its GPU work before the next starts: training overlaps them, "
                     "so the data share here is an upper bound")
        if not any(op.self_device_ms for op in ops):
            notes.append("no CUDA kernel was recorded: CUPTI may be closed to this user (see the profiler's "
                         "messages above)")
    if runtime.compile:
        notes.append("torch.compile is on: the compiled graph shows as few large operators")
    if accum_steps > steps:
        notes.append(f"accum_steps is {accum_steps}: the optimizer steps once every {accum_steps} batches, "
                     f"more than the {steps} profiled")
    return notes


def where_time_went(share: dict[str, float]) -> str:
    """One sentence on the phases' shares of a step, starting with what dominates."""
    parts = ", ".join(f"{name} {share[name]:.0%}" for name in sorted(share, key=share.__getitem__, reverse=True))
    if share.get("data", 0.0) > DATA_BOUND:
        verdict = "data loading is a large part of each step: the model waits for its input"
    elif share.get("optimizer", 0.0) > max(share.get("forward", 0.0), share.get("backward", 0.0)):
        verdict = "the optimizer step outweighs forward and backward: the batch is small for this model"
    else:
        verdict = "most of a step is the model's forward and backward pass"
    return f"{verdict} ({parts})"
