"""What `tui-hpo gpu benchmark`'s figures mean, in plain words: which precision, whether
torch.compile pays and after how long, whether channels-last helps, and how the card's matmul
speed compares with its datasheet. Pure functions over `engine.system.benchmarks` records, shared
by the command and the System screen; tested with fake measurements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.system.benchmarks import Benchmark, Figure, ModelBench, Variant

FASTER = 1.05  # a variant at least this much faster is a real gain, not noise
SLOWER = 0.95
COMPILE_GAIN = 1.02  # below this torch.compile gains nothing that could repay its cost


@dataclass(frozen=True)
class Card:
    pattern: str  # searched in the device name ("NVIDIA H100 80GB HBM3")
    name: str
    article: str  # "an H200", "a T4"
    tflops: dict[str, float]  # dense (no sparsity) datasheet peaks, by precision


# NVIDIA datasheets, dense figures (half the "with sparsity" ones); fp16 with fp32 accumulation,
# as torch's matmuls accumulate. A card missing here gets its figures without a percentage.
CARDS: tuple[Card, ...] = (
    Card(r"H200", "H200", "an", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}),
    Card(r"H100(?!.*(PCIe|NVL))", "H100 SXM", "an", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}),
    Card(r"A100", "A100", "an", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    Card(r"L40S", "L40S", "an", {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6}),
    Card(r"\bA10\b", "A10", "an", {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2}),
    Card(r"RTX 4090", "RTX 4090", "an", {"bf16": 165, "fp16": 165, "tf32": 82.6, "fp32": 82.6}),
    Card(r"RTX 3090", "RTX 3090", "an", {"bf16": 71, "fp16": 71, "tf32": 35.6, "fp32": 35.6}),
    Card(r"\bT4\b", "T4", "a", {"fp16": 65, "fp32": 8.1}),
    Card(r"V100.*PCIE", "V100 PCIe", "a", {"fp16": 112, "fp32": 14}),
    Card(r"V100", "V100 SXM2", "a", {"fp16": 125, "fp32": 15.7}),
)
PRECISION = {"bf16": "bf16", "fp16": "fp16", "tf32": "TF32", "fp32": "fp32"}


def card(device: str) -> Card | None:
    """The datasheet entry of a device name, if it is one of CARDS."""
    return next((c for c in CARDS if re.search(c.pattern, device, re.IGNORECASE)), None)


def number(value: float) -> str:
    """Three significant figures, thousands separated: 989, 35.6, 0.0163, 4,130."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def matmul_verdict(device: str, dtype: str, figure: Figure) -> str:
    """"matmul bf16 780 TFLOP/s: 79% of an H200's datasheet 989", or why it was not measured."""
    label = PRECISION.get(dtype, dtype)
    if figure.value is None:
        return f"matmul {label}: not measured ({figure.why_not or 'no figure'})"
    said = f"matmul {label} {number(figure.value)} TFLOP/s"
    share = datasheet_share(device, dtype, figure.value)
    return f"{said}: {share}" if share else said


def datasheet_share(device: str, dtype: str, tflops: float) -> str | None:
    """"79% of an H200's datasheet 989"; None for a card or precision without a datasheet figure."""
    found = card(device)
    peak = found.tflops.get(dtype) if found else None
    if found is None or peak is None:
        return None
    return f"{tflops / peak:.0%} of {found.article} {found.name}'s datasheet {number(peak)}"


def bandwidth_lines(bench: Benchmark) -> list[str]:
    """The measured bandwidths (what was not measured is in `bench.not_measured`)."""
    return [f"{what} {number(figure.value)} GB/s"
            for what, figure in (("device memory", bench.memory_bandwidth_gbs),
                                 ("host to device", bench.host_to_device_gbs)) if figure.value is not None]


def speedup(variant: Variant | None, reference: Variant | None) -> float | None:
    """How many times faster `variant` trained than `reference`; None unless both ran."""
    if variant is None or reference is None or not variant.measured or not reference.measured:
        return None
    assert variant.samples_per_s is not None and reference.samples_per_s is not None
    return variant.samples_per_s / reference.samples_per_s


def _amp_rates(bench: ModelBench) -> dict[str, Variant]:
    """The measured variant of each precision, all else as the baseline."""
    base = bench.baseline
    if base is None or not base.measured:
        return {}
    found = {base.amp: base}
    for v in bench.variants:
        if v.name.startswith("amp ") and v.measured:
            found[v.amp] = v
    return found


def amp_choice(bench: ModelBench) -> str | None:
    """The precision to train this model with: the baseline's (the profile's), unless another ran
    clearly faster (FASTER)."""
    rates = _amp_rates(bench)
    base = bench.baseline
    if base is None or not rates:
        return None
    best = max(rates.values(), key=lambda v: v.samples_per_s or 0.0)
    ratio = speedup(best, base)
    return best.amp if ratio is not None and ratio >= FASTER else base.amp


def amp_verdicts(bench: ModelBench, kind: str = "cuda") -> list[str]:
    """One line per mixed precision against full precision: "bf16 is 1.8x faster than full
    precision on resnet18: keep amp bf16". On the CPU (`kind`) sweeps always train in full
    precision, so a faster precision there is news, not advice."""
    rates = _amp_rates(bench)
    base = bench.baseline
    if base is None or len(rates) < 2:
        return []
    reference = "off" if "off" in rates else base.amp
    ref_words = "full precision" if reference == "off" else reference
    choice = amp_choice(bench)
    action = f"{'keep' if choice == base.amp else 'use'} amp {choice}"
    if kind != "cuda" and choice != "off":
        action = "but sweeps train in full precision on the CPU"
    lines = []
    for amp in ("bf16", "fp16", "off"):
        if amp == reference or amp not in rates:
            continue
        ratio = speedup(rates[amp], rates[reference])
        assert ratio is not None
        if ratio >= FASTER:
            said = f"{amp} is {ratio:.1f}x faster than {ref_words} on {bench.model}"
        elif ratio <= SLOWER:
            said = f"{amp} is {ratio:.1f}x the speed of {ref_words} on {bench.model}: slower here"
        else:
            said = f"{amp} runs at the speed of {ref_words} on {bench.model} ({ratio:.2f}x)"
        if amp == choice or choice == reference:
            said += f"{', ' if ratio <= SLOWER else ': '}{action}"
        lines.append(said)
    return lines


def pays_after_s(compile_s: float, ratio: float) -> float | None:
    """Seconds of (eager) training after which a compile of `compile_s` has paid for itself at
    `ratio` times the eager speed; None when it never does."""
    if ratio <= 1:
        return None
    return compile_s / (1 - 1 / ratio)


def compile_verdict(bench: ModelBench) -> str | None:
    """"torch.compile on resnet18: 47 s to compile for a 1.1x gain: pays after 9 minutes of
    training of this shape", or why it never pays, or why it was not measured."""
    compiled = bench.variant("compiled")
    if compiled is None:
        return None
    if compiled.skipped:
        return f"torch.compile on {bench.model}: not measured ({compiled.skipped})"
    ratio = speedup(compiled, bench.baseline)
    if ratio is None or compiled.compile_s is None:
        return None
    cost = f"{compiled.compile_s:.0f} s to compile"
    if ratio < COMPILE_GAIN:
        how = f"{ratio:.2f}x: slower here" if ratio <= SLOWER else f"{ratio:.2f}x: no faster"
        return f"torch.compile on {bench.model}: {cost} and {how}, never pays: keep compile off"
    after = pays_after_s(compiled.compile_s, ratio)
    assert after is not None
    return (f"torch.compile on {bench.model}: {cost} for a {ratio:.1f}x gain: pays after {duration(after)} of "
            f"training of this shape")


def channels_last_verdict(bench: ModelBench) -> str | None:
    """"channels-last is 0.9x on resnet18: slower here, turn it off", and the like."""
    base = bench.baseline
    flipped = next((v for v in bench.variants if v.name.startswith("channels-last")), None)
    if base is None or flipped is None:
        return None
    if flipped.skipped:
        return f"channels-last on {bench.model}: not measured ({flipped.skipped})"
    on, off = (base, flipped) if base.channels_last else (flipped, base)
    ratio = speedup(on, off)
    if ratio is None:
        return None
    if ratio >= FASTER:
        return (f"channels-last is {ratio:.1f}x faster on {bench.model}: "
                f"{'keep it on' if base.channels_last else 'turn it on (resources.channels_last: true)'}")
    if ratio <= SLOWER:
        return (f"channels-last is {ratio:.1f}x on {bench.model}: slower here, "
                f"{'turn it off (resources.channels_last: false)' if base.channels_last else 'keep it off'}")
    return f"channels-last makes no difference on {bench.model} ({ratio:.2f}x)"


def model_verdicts(bench: ModelBench, kind: str = "cuda") -> list[str]:
    base = bench.baseline
    if base is None or not base.measured:
        why = base.skipped if base is not None else "no baseline"
        return [f"{bench.model}: not measured ({why})"]
    lines = [*amp_verdicts(bench, kind), compile_verdict(bench), channels_last_verdict(bench)]
    return [line for line in lines if line]


def device_verdicts(bench: Benchmark) -> list[str]:
    """The matmul figures (measured ones only) and the bandwidths."""
    lines = [matmul_verdict(bench.device, dtype, figure) for dtype, figure in bench.matmul_tflops.items()
             if figure.value is not None]
    return lines + bandwidth_lines(bench)


def verdicts(bench: Benchmark) -> list[str]:
    """Everything the benchmark says, one line each: the device, then each model."""
    return [*device_verdicts(bench), *(line for m in bench.models for line in model_verdicts(m, bench.kind))]
