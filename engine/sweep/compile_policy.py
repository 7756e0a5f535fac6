"""`resources.compile: auto`: compile a trial's model only where the measured gain pays for the
measured cost.

torch.compile costs a minute or more per (model, input shape) and gains nothing on short trials
(FACTS.md: resnet18 at 64 px on an H200 ran 12,000 samples/s eager, 10,200 compiled, and its
first compiled epoch took 52 s). Whether it pays depends on the GPU, the model, the image size,
the batch, the precision and the torch version, so each such combination (a `shape_key`) keeps
its measured eager step, compiled step and compile cost in the database, across sweeps.

The first trial of a combination runs eager (its steady step time is measured). A later trial is
compiled once, to measure, only when it is long enough that a typical compile would pay even at
a modest gain; from then on each trial compiles exactly when `steps x (eager - compiled)` exceeds
the compile cost. An explicit `true`/`false` is never second-guessed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.system.benchmarks import Benchmark

# Before anything is measured: what compiling is assumed to cost and to gain when deciding
# whether one trial is long enough to be worth measuring. The cost is FACTS.md's 52 s, rounded
# up (larger models take longer); the gain is a hopeful one (it was negative there).
ASSUMED_COMPILE_S = 60.0
ASSUMED_GAIN = 0.2


class EpochTiming(Protocol):
    """What a finished epoch says about speed (engine.training.fit.EpochMetrics has it)."""

    samples_per_s: float
    seconds: float


@dataclass(frozen=True)
class Speeds:
    eager_step_s: float | None = None
    compiled_step_s: float | None = None
    compile_s: float | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Speeds:
        return cls(**{k: row.get(k) for k in ("eager_step_s", "compiled_step_s", "compile_s")})


@dataclass(frozen=True)
class Prior:
    """What `tui-hpo gpu benchmark` measured for a model on this device (at its own image size and
    batch): it replaces ASSUMED_COMPILE_S and ASSUMED_GAIN until this shape is measured here."""

    compile_s: float
    speedup: float  # compiled samples/s over eager samples/s
    where: str  # "224 px, batch 256"

    @property
    def gain(self) -> float:
        """The share of eager training time compiling saves (negative when it is slower)."""
        return 1 - 1 / self.speedup


def prior_from(bench: Benchmark | None, model: str, torch_version: str) -> Prior | None:
    """The benchmark's compile cost and gain for `model`, when it measured both with this torch
    (another torch compiles differently)."""
    if bench is None or bench.torch_version != torch_version:
        return None
    found = bench.model(model)
    if found is None:
        return None
    base, compiled = found.baseline, found.variant("compiled")
    if base is None or compiled is None or not base.measured or not compiled.measured or compiled.compile_s is None:
        return None
    assert base.samples_per_s and compiled.samples_per_s
    return Prior(compile_s=compiled.compile_s, speedup=compiled.samples_per_s / base.samples_per_s,
                 where=f"{found.image_size} px, batch {found.batch}")


@dataclass(frozen=True)
class Decision:
    compile: bool
    reason: str  # the event the user reads: "compile skipped for resnet18 at 64 px: ..."


def shape_key(device_name: str, model: str, image_size: int, batch_size: int, amp: str, channels_last: bool,
              torch_version: str) -> str:
    layout = "channels-last" if channels_last else "contiguous"
    return f"{device_name}|{model}|{image_size}px|batch {batch_size}|amp {amp}|{layout}|torch {torch_version}"


def decide(setting: bool | str | None, speeds: Speeds, steps: int, what: str, prior: Prior | None = None) -> Decision:
    """Whether a trial of `steps` training steps compiles `what` ("resnet18 at 64 px"). Until the
    shape's compile is measured, `prior` (from `tui-hpo gpu benchmark`) stands in for the
    assumed cost and gain."""
    if setting is not None and setting != "auto":
        return Decision(bool(setting), f"compile {'on' if setting else 'off'} for {what}: set in the config")
    eager, compiled, cost = speeds.eager_step_s, speeds.compiled_step_s, speeds.compile_s
    if eager is None:
        return Decision(False, f"compile skipped for {what}: its first trial runs eager, to measure a step")
    training = steps * eager
    if (compiled is None or cost is None) and prior is not None:
        return _decide_from_prior(prior, training, what)
    if compiled is None or cost is None:
        if training * ASSUMED_GAIN > ASSUMED_COMPILE_S:
            return Decision(True, f"compile tried for {what}: {training:.0f} s of eager training may repay a "
                                  f"compile (~{ASSUMED_COMPILE_S:.0f} s, not measured yet); measuring it")
        return Decision(False, f"compile skipped for {what}: ~{ASSUMED_COMPILE_S:.0f} s to compile (not measured "
                               f"here yet), {training:.0f} s of training")
    saving = steps * (eager - compiled)
    if saving > cost:
        return Decision(True, f"compile on for {what}: {cost:.0f} s to compile, saves {saving:.0f} s of "
                              f"{training:.0f} s training")
    gain = "runs no faster compiled" if compiled >= eager else f"would save {saving:.0f} s"
    return Decision(False, f"compile skipped for {what}: {cost:.0f} s to compile, {training:.0f} s of training "
                           f"({gain})")


def _decide_from_prior(prior: Prior, training: float, what: str) -> Decision:
    said = (f"`tui-hpo gpu benchmark` measured ~{prior.compile_s:.0f} s to compile for {prior.speedup:.2f}x at "
            f"{prior.where}")
    if prior.gain <= 0:
        return Decision(False, f"compile skipped for {what}: {said}: no faster compiled")
    if training * prior.gain > prior.compile_s:
        return Decision(True, f"compile tried for {what}: {training:.0f} s of eager training may repay it ({said}); "
                              "measuring it")
    return Decision(False, f"compile skipped for {what}: {said}, {training:.0f} s of training")


def measure(epochs: Sequence[EpochTiming], batch_size: int, steps_per_epoch: int, compiled: bool,
            known: Speeds) -> dict[str, float]:
    """What a finished fold says: the steady step time (epochs after the first, the first when
    there is only one and nothing was compiled), and for a compiled run its compile cost (the
    first epoch's excess over a steady one, or over the eager estimate with a single epoch)."""
    if not epochs:
        return {}
    steady = list(epochs[1:]) or ([] if compiled else list(epochs))
    out: dict[str, float] = {}
    if steady:
        rate = statistics.median(e.samples_per_s for e in steady)
        if rate > 0:
            out["compiled_step_s" if compiled else "eager_step_s"] = batch_size / rate
    if compiled:
        if len(epochs) > 1:
            out["compile_s"] = max(0.0, epochs[0].seconds - statistics.median(e.seconds for e in epochs[1:]))
        elif known.eager_step_s is not None:
            out["compile_s"] = max(0.0, epochs[0].seconds - steps_per_epoch * known.eager_step_s)
    return out
