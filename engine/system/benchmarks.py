"""What `tui-hpo gpu benchmark` measured on a device, kept in the user cache for the System screen
and for `resources.compile: auto` (engine.sweep.compile_policy), which starts from these figures
instead of its assumptions. No torch here: `engine.training.gpu_bench` measures.

One JSON file, `~/.cache/tui-hpo/gpu_benchmark.json`, keyed by device (the GPU's name, or
"cpu: <CPU model>"): a benchmark of another device is kept beside this one. Reading never raises:
a missing or damaged file is no benchmark.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from engine.artifacts import user_cache_dir, write_atomic

FILE_NAME = "gpu_benchmark.json"
FORMAT = 1


@dataclass(frozen=True)
class Figure:
    """A measured number, or why there is none on this device."""

    value: float | None = None
    why_not: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any] | None) -> Figure:
        row = row or {}
        return cls(value=row.get("value"), why_not=row.get("why_not"))


@dataclass(frozen=True)
class Variant:
    """One way of running a model's training step, and how fast it went (or why it did not run)."""

    name: str  # "baseline", "compiled", "amp off", "amp fp16", "channels-last off", ...
    compile: bool
    amp: str  # "off", "bf16" or "fp16"
    channels_last: bool
    samples_per_s: float | None = None
    peak_mem_mb: float | None = None
    compile_s: float | None = None  # the first compiled step's time beyond a steady step
    skipped: str | None = None  # why it did not run here, or "failed: ..." when it broke

    @property
    def measured(self) -> bool:
        return self.skipped is None and bool(self.samples_per_s)


@dataclass(frozen=True)
class ModelBench:
    model: str
    image_size: int
    batch: int
    steps: int
    variants: tuple[Variant, ...]
    date: str = ""
    memory: str = ""  # what peak_mem_mb means here: "CUDA max allocated" or "RSS growth"

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def baseline(self) -> Variant | None:
        return self.variant("baseline")

    @classmethod
    def of(cls, row: dict[str, Any]) -> ModelBench:
        return cls(model=row["model"], image_size=int(row["image_size"]), batch=int(row["batch"]),
                   steps=int(row["steps"]), variants=tuple(Variant(**v) for v in row.get("variants", [])),
                   date=row.get("date", ""), memory=row.get("memory", ""))


@dataclass(frozen=True)
class Benchmark:
    device: str  # the key: device_key(...)
    kind: str  # "cuda" or "cpu"
    date: str  # ISO 8601, UTC
    torch_version: str
    matmul_tflops: dict[str, Figure]  # "bf16", "fp16", "tf32", "fp32"
    memory_bandwidth_gbs: Figure
    host_to_device_gbs: Figure
    models: tuple[ModelBench, ...] = ()
    not_measured: tuple[str, ...] = ()  # one line each: what this device cannot measure
    threads: int | None = None  # on the CPU: torch threads, as each of the profile's parallel trials has

    def model(self, name: str) -> ModelBench | None:
        return next((m for m in self.models if m.model == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Benchmark:
        return cls(device=row["device"], kind=row["kind"], date=row["date"], torch_version=row["torch_version"],
                   matmul_tflops={k: Figure.of(v) for k, v in (row.get("matmul_tflops") or {}).items()},
                   memory_bandwidth_gbs=Figure.of(row.get("memory_bandwidth_gbs")),
                   host_to_device_gbs=Figure.of(row.get("host_to_device_gbs")),
                   models=tuple(ModelBench.of(m) for m in row.get("models", [])),
                   not_measured=tuple(row.get("not_measured", [])), threads=row.get("threads"))


def device_key(device: str, name: str) -> str:
    """The key of a device's benchmark: `name` is what `engine.training.devices.device_name` says
    ("NVIDIA H200"; the CPU's model on the CPU), which NVML's name matches for a GPU."""
    return name if device.startswith("cuda") else f"cpu: {name}" if device == "cpu" else name


def default_path() -> Path:
    return user_cache_dir() / FILE_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("benchmarks"), dict):
        return {}
    return data["benchmarks"]


def load_all(path: Path | None = None) -> dict[str, Benchmark]:
    """Every stored benchmark by device key; an entry that does not read back is left out."""
    out = {}
    for key, row in _read(path or default_path()).items():
        try:
            out[key] = Benchmark.of(row)
        except (KeyError, TypeError, ValueError):
            continue
    return out


def load(key: str, path: Path | None = None) -> Benchmark | None:
    return load_all(path).get(key)


def merged(new: Benchmark, old: Benchmark | None) -> Benchmark:
    """`new`, keeping the models an earlier run of the same torch measured and this one did not."""
    if old is None or old.torch_version != new.torch_version:
        return new
    measured = {m.model for m in new.models}
    return replace(new, models=tuple(m for m in old.models if m.model not in measured) + new.models)


def save(bench: Benchmark, path: Path | None = None) -> Path:
    """Store `bench` under its device (merged with that device's earlier models); returns the file."""
    path = path or default_path()
    rows = _read(path)
    old = load_all(path).get(bench.device)
    rows[bench.device] = merged(bench, old).to_dict()
    write_atomic(path, json.dumps({"format": FORMAT, "benchmarks": rows}, indent=2) + "\n")
    return path


def plan_variants(platform_amp: str, platform_channels_last: bool, on_cuda: bool, bf16: bool,
                  compile_why_not: str | None) -> list[Variant]:
    """The variants to run: a baseline as the platform profile trains (eager, its precision and
    memory layout), then one change at a time from it (compiled; each other precision;
    channels-last flipped), not the whole cross product. Those this device cannot run come
    marked skipped, with the reason."""
    amp, layout = platform_amp, platform_channels_last
    out = [Variant("baseline", False, amp, layout),
           Variant("compiled", True, amp, layout, skipped=compile_why_not)]
    for other in ("off", "bf16", "fp16"):
        if other == amp:
            continue
        why = None
        if other == "fp16" and not on_cuda:
            why = "fp16 needs a CUDA GPU (its grad scaler and fast kernels)"
        elif other == "bf16" and on_cuda and not bf16:
            why = "this GPU has no bf16 (compute capability 8.0 or newer)"
        out.append(Variant(f"amp {other}", False, other, layout, skipped=why))
    out.append(Variant(f"channels-last {'off' if layout else 'on'}", False, amp, not layout))
    return out


LAYOUT_MARGIN = 0.05  # a layout must be this much faster on every model measured to be preferred


def preferred_layout(bench: Benchmark | None) -> bool | None:
    """channels-last (True) or contiguous (False) where the benchmark found the other layout
    faster than the baseline's by LAYOUT_MARGIN on every model it measured both on; else None
    (nothing measured, or no clear winner): the profile then keeps its default."""
    wins: set[bool] = set()
    for model in bench.models if bench else ():
        base = model.baseline
        flipped = next((v for v in model.variants if v.name.startswith("channels-last")), None)
        if base is None or flipped is None or not base.measured or not flipped.measured:
            continue
        ratio = (flipped.samples_per_s or 0) / (base.samples_per_s or 1)
        if ratio > 1 + LAYOUT_MARGIN:
            wins.add(flipped.channels_last)
        elif ratio < 1 - LAYOUT_MARGIN:
            wins.add(base.channels_last)
        else:
            return None
    return wins.pop() if len(wins) == 1 else None
