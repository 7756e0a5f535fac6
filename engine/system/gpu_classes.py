"""What a GPU does best, by its memory class and its features, in words and in profile settings.

The origin documents' GPU guide tunes per card (RTX 3080 10 GB: batch 48, safety 0.80 ... RTX
4090 24 GB: batch 256, safety 0.95). Cards within a class behave alike for small-model sweeps, so
tui-hpo keeps four classes by memory: the batch multiplier the CUDA profile applies, how many
trials share a card to start with, and the safety factor the batch finder keeps below the
largest batch that fitted. A card's features add their own advice: bf16 and TF32 from Ampere
(compute capability 8.0) on, fp16 tensor cores from Volta (7.0), none before.

Plain functions over `GpuInfo` and NVML details: no torch, tested with fake cards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # platform.profile uses this module
    from engine.system.platform import GpuInfo


@dataclass(frozen=True)
class MemoryClass:
    name: str
    min_gb: float  # a card belongs to the largest class whose min_gb its memory reaches
    batch_multiplier: float  # on the presets' CUDA reference batch sizes
    trials_per_gpu: int | str  # to start with: "auto" packs more while they fit and help
    safety: float  # the batch finder keeps this share of the largest batch that fitted
    advice: str


CLASSES: tuple[MemoryClass, ...] = (
    MemoryClass("up to 12 GB", 0, 0.5, 1, 0.80,
                "a small card: keep mixed precision on, batches of 32-64 at 224 px (gradient accumulation for "
                "more), one trial at a time; prefer small models (resnet18, efficientnet_b0) for sweeps"),
    MemoryClass("16-24 GB", 14, 1.0, "auto", 0.90,
                "batches of 128-256 at 224 px for small models; one trial per card, a second only for tiny "
                "models (trials_per_gpu: auto measures whether it helps)"),
    MemoryClass("32-48 GB", 30, 1.5, "auto", 0.90,
                "room for batch 256+ or two trials of small models side by side (trials_per_gpu: auto); "
                "larger images (288-384 px) fit for fine-tuning"),
    MemoryClass("80 GB+", 64, 2.0, "auto", 0.95,
                "one small-model trial leaves most of this card idle: pack trials (trials_per_gpu: auto adds "
                "them while they help), use large batches (batch_size: auto finds the largest that fits) and "
                "larger models or images where accuracy needs them"),
)


def memory_class(total_mb: float) -> MemoryClass:
    gb = total_mb / 1024
    return [c for c in CLASSES if gb >= c.min_gb][-1]


def smallest_class(gpus: Sequence[GpuInfo]) -> MemoryClass:
    """The class the profile plans for: a sweep's trials may land on any of its GPUs."""
    return memory_class(min((g.total_mb for g in gpus), default=0.0))


def _cc(gpu: GpuInfo) -> tuple[int, int]:
    try:
        major, minor = gpu.compute_capability.split(".")
        return int(major), int(minor)
    except ValueError:
        return 0, 0


def tf32(gpu: GpuInfo) -> bool:
    """TF32 tensor cores (Ampere on): float32 matmuls at several times the speed, slightly rounded."""
    return _cc(gpu) >= (8, 0)


HOT_C = 83.0  # most NVIDIA cards start slowing their clocks around here
NEAR_POWER_LIMIT = 0.95


def advice(gpu: GpuInfo, details: dict[str, Any] | None = None) -> list[str]:
    """What to do on this card, in words: its memory class, its precision, and what NVML says of
    its state (heat, power, PCIe link) where `details` (engine.system.nvml.details) has it."""
    details = details or {}
    klass = memory_class(gpu.total_mb)
    said = [f"{klass.name}: {klass.advice}"]
    major, _minor = _cc(gpu)
    if gpu.bf16:
        said.append("bf16 mixed precision (the profile's amp: bf16): the speed of fp16 without a loss scaler; "
                    "TF32 for what stays in float32")
    elif major >= 7:
        said.append("fp16 mixed precision with a gradient scaler (amp: fp16): this card has fp16 tensor cores but "
                    "no bf16")
    elif major:
        said.append("no tensor cores (before Volta): mixed precision saves memory but gains little speed; "
                    "compile rarely pays")
    temperature = details.get("temperature_c", gpu.temperature_c)
    if temperature is not None and temperature >= HOT_C:
        said.append(f"running hot ({temperature:.0f} C): clocks throttle at this temperature; check the cooling "
                    "before timing anything")
    power, limit = details.get("power_w", gpu.power_w), details.get("power_limit_w")
    if power is not None and limit and power >= NEAR_POWER_LIMIT * limit:
        said.append(f"at its power limit ({power:.0f} of {limit:.0f} W): clocks are capped by power, not by work")
    width, max_width = details.get("pcie_width"), details.get("pcie_max_width")
    if width and max_width and width < max_width:
        said.append(f"PCIe link at x{width} of x{max_width}: host-to-device copies run at "
                    f"{width / max_width:.0%} speed (a card in a narrower slot, or a riser): a full-width slot "
                    "feeds it faster")
    return said


def explain_profile(resources: dict[str, Any], platform: str, gpus: Sequence[GpuInfo]) -> list[str]:
    """Why the profile (engine.system.platform.profile) sets what it sets, one line per setting."""
    if platform == "cuda":
        klass = smallest_class(gpus)
        lines = [
            f"amp {resources['amp']}: " + ("every GPU supports bf16" if resources["amp"] == "bf16"
                                           else "a GPU without bf16: fp16 with a gradient scaler"),
            "compile auto: each (model, shape) compiles only once measurements say the compile pays for itself",
            "channels_last: convolutions run faster in NHWC on tensor cores" if resources["channels_last"]
            else "channels_last off: `tui-hpo gpu benchmark` measured channels-last slower on this card",
            "pin_memory: page-locked host memory for asynchronous host-to-device copies",
            f"batch x{resources['batch_multiplier']}: the {klass.name} class"
            + (f" (the smallest of {len(gpus)} GPUs)" if len(gpus) > 1 else ""),
        ]
        per_gpu = resources.get("trials_per_gpu")
        lines.append(f"parallel {resources['parallel']}, trials per GPU {per_gpu}: "
                     + ("one per GPU to start, more while measurements say they fit and help" if per_gpu == "auto"
                        else "fixed: set in the config, or cards too small to share"))
        return lines
    if platform == "mps":
        return ["amp off, no compile: MPS gains little from either for small models",
                f"batch x{resources['batch_multiplier']}: unified memory shared with the system",
                "parallel 1: one process owns the GPU"]
    return [f"parallel {resources['parallel']}: single-threaded workers, one per core up to four (two 1-thread "
            "workers beat one 2-thread worker on small models)",
            f"batch x{resources['batch_multiplier']}: smaller batches take more optimizer steps per second of CPU",
            "amp off, no compile: neither pays on a CPU for seconds-long trials"]
