"""Platform report (OS, CPU, RAM, CUDA GPUs, Apple MPS) and the training profile it implies.

This module never imports torch: `probe_without_torch` reads NVML and the OS (for the TUI),
`probe_for_sweep` adds what torch was built with and which GPUs CUDA will show (for the engine,
whose start would otherwise spend seconds importing torch); `engine.training.devices.probe` asks
torch itself, for `tui-hpo info` and the processes that train.
The probes never raise: each part that cannot be read is left empty. The profile is the bottom
layer of every resolved config, so a config file or a flag overrides any of its settings.
"""

from __future__ import annotations

import os
import platform as pyplatform
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata, util
from pathlib import Path
from typing import Any

import psutil

from engine.system import benchmarks, nvml
from engine.system.gpu_classes import smallest_class


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_mb: float
    free_mb: float | None
    compute_capability: str
    bf16: bool
    util_percent: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class PlatformInfo:
    os: str
    hostname: str
    python: str
    versions: dict[str, str | None]
    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    ram_total_gb: float
    ram_available_gb: float
    cuda_available: bool
    cuda_version: str | None
    driver_version: str | None
    gpus: list[GpuInfo] = field(default_factory=list)
    mps_available: bool = False
    platform: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The marketing name of the CPU, which `platform.processor()` often leaves empty on Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor() or pyplatform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def report(gpus: list[GpuInfo], cuda: bool, cuda_version: str | None, mps: bool,
           notes: list[str] | None = None) -> PlatformInfo:
    """The platform report around what was found of CUDA and MPS (by torch, or by NVML alone)."""
    mem = psutil.virtual_memory()
    return PlatformInfo(
        os=f"{pyplatform.system()} {pyplatform.release()} ({pyplatform.machine()})",
        hostname=pyplatform.node(),
        python=sys.version.split()[0],
        versions={p: _version(p) for p in ("torch", "torchvision", "timm", "optuna", "textual")},
        cpu_model=cpu_model(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=usable_cores(),
        ram_total_gb=mem.total / 2**30,
        ram_available_gb=mem.available / 2**30,
        cuda_available=cuda,
        cuda_version=cuda_version,
        driver_version=nvml.driver_version(),
        gpus=gpus,
        mps_available=mps,
        platform="cuda" if cuda and gpus else ("mps" if mps else "cpu"),
        notes=notes or [],
    )


def probe_without_torch() -> PlatformInfo:
    """The same report from NVML and the OS alone, for processes that must not import torch (the
    TUI). CUDA availability is inferred from the driver; MPS from Apple silicon."""
    gpus = _nvml_gpus()
    mps = sys.platform == "darwin" and pyplatform.machine() == "arm64"
    return report(gpus, bool(gpus), nvml.cuda_driver_version(), mps)


def torch_cuda_build() -> tuple[bool, str | None]:
    """(torch is installed, the CUDA version it was built with: None for a CPU-only build), read
    from torch's version.py without importing torch."""
    spec = util.find_spec("torch")
    if spec is None or not spec.origin:
        return False, None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return True, None
    found = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return True, found.group(1) if found else None


def probe_for_sweep(environ: Mapping[str, str] | None = None) -> PlatformInfo | None:
    """What the engine needs to plan a sweep, without importing torch: NVML's GPUs as CUDA will
    number them (after CUDA_VISIBLE_DEVICES), kept only when this torch is built with CUDA.

    None when only CUDA itself can tell which GPUs a process sees: CUDA_VISIBLE_DEVICES naming
    GPUs by UUID or MIG instance, or unlike GPUs in CUDA's default fastest-first order (which
    NVML does not follow). The caller then asks torch. A driver too old for this torch is found
    by the workers (`engine.training.devices.cuda_problem`), which stop the sweep with its reason."""
    environ = os.environ if environ is None else environ
    installed, cuda_build = torch_cuda_build()
    notes = [] if installed else ["torch is not installed: the sweep cannot train"]
    gpus = _nvml_gpus()
    if gpus and cuda_build is None:
        notes.append(f"{len(gpus)} NVIDIA GPU(s) found, but this torch is built without CUDA: training runs on "
                     "the CPU (install a CUDA build of torch to use them)")
        gpus = []
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if gpus and visible is not None:
        entries = [v.strip() for v in visible.split(",")] if visible.strip() else []
        if not all(e.isdigit() for e in entries):
            return None
        picked = [int(e) for e in entries]
        if len(set(picked)) != len(picked) or any(i >= len(gpus) for i in picked):
            return None  # CUDA stops at a repeated or missing index: let it say what it shows
        gpus = [replace(gpus[physical], index=n) for n, physical in enumerate(picked)]
    if len({g.name for g in gpus}) > 1 and environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return None
    mps = installed and sys.platform == "darwin" and pyplatform.machine() == "arm64"
    return report(gpus, bool(gpus), cuda_build, mps, notes)


def _nvml_gpus() -> list[GpuInfo]:
    """Every GPU NVML sees, in its (PCI bus) order."""
    gpus = []
    nv = nvml._nvml()
    for reading in nvml.readings():
        cc = None
        if nv is not None:
            handle = nvml.query(nv.nvmlDeviceGetHandleByIndex, reading.index)
            cc = nvml.query(nv.nvmlDeviceGetCudaComputeCapability, handle) if handle is not None else None
        major, minor = cc if isinstance(cc, tuple) else (0, 0)
        free = None if reading.mem_total_mb is None or reading.mem_used_mb is None \
            else reading.mem_total_mb - reading.mem_used_mb
        gpus.append(GpuInfo(index=reading.index, name=reading.name or "NVIDIA GPU", total_mb=reading.mem_total_mb or 0,
                            free_mb=free, compute_capability=f"{major}.{minor}" if cc else "?", bf16=major >= 8,
                            util_percent=reading.util_percent, temperature_c=reading.temperature_c,
                            power_w=reading.power_w))
    return gpus


def choose_platform(info: PlatformInfo, requested: str = "auto") -> str:
    """The platform a sweep runs on: what was asked for, if this machine has it."""
    from engine.errors import ConfigError

    if requested == "auto":
        return info.platform
    if requested == "cuda" and not info.gpus:
        raise ConfigError("no CUDA GPU on this machine", key="resources.device")
    if requested == "mps" and not info.mps_available:
        raise ConfigError("Apple MPS is not available on this machine", key="resources.device")
    return requested


def profile(info: PlatformInfo, platform: str, gpu_indices: list[int] | None = None,
            trials_per_gpu: int | str | None = None) -> dict[str, Any]:
    """Training defaults that suit the platform, as a config layer (`resources:` only).

    CUDA: mixed precision (bf16 where every GPU supports it, else fp16 with a grad scaler),
    torch.compile where measurements say it pays (`auto`), channels_last, pinned memory, and by
    the smallest GPU's memory class (engine.system.gpu_classes) the batch multiplier (x0.5 up to
    12 GB ... x2 from 80 GB) and the trials per GPU: one on small cards, else one to start with
    and more while they fit and help (`trials_per_gpu: auto`, engine.sweep.packing), unless a
    number is asked for. Contiguous memory instead where `tui-hpo gpu benchmark` measured
    channels-last slower on that card.
    MPS: full precision, no pinned memory, batch x0.8, one trial at a time.
    CPU: batch x0.5, up to four parallel trials; each worker gets cores // parallel threads.
    """
    cores = info.logical_cores
    if platform == "cuda":
        gpus = [g for g in info.gpus if gpu_indices is None or g.index in gpu_indices]
        klass = smallest_class(gpus)
        trials_per_gpu = trials_per_gpu or klass.trials_per_gpu
        per_gpu = trials_per_gpu if isinstance(trials_per_gpu, int) else 1
        # `tui-hpo gpu benchmark` on this card may have measured the memory layout: it decides then
        layout = benchmarks.preferred_layout(benchmarks.load(min(gpus, key=lambda g: g.total_mb).name)) \
            if gpus else None
        resources = {
            "amp": "bf16" if gpus and all(g.bf16 for g in gpus) else "fp16",
            "compile": "auto", "channels_last": True if layout is None else layout, "pin_memory": True,
            "batch_multiplier": klass.batch_multiplier,
            "parallel": max(1, len(gpus) * per_gpu), "trials_per_gpu": trials_per_gpu,
        }
    elif platform == "mps":
        resources = {"amp": "off", "compile": False, "channels_last": False, "pin_memory": False,
                     "batch_multiplier": 0.8, "parallel": 1}
    else:
        # Two single-threaded workers beat one two-threaded worker on small models (FACTS.md).
        parallel = max(1, min(cores, 4))
        resources = {"amp": "off", "compile": False, "channels_last": False, "pin_memory": False,
                     "batch_multiplier": 0.5, "parallel": parallel}
    return {"resources": resources}
