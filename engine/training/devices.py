"""What torch itself says about this machine's devices: CUDA GPUs (with their free memory and
compute capability) and Apple MPS. For the processes that train; the TUI uses
`engine.system.platform.probe_without_torch` instead.
"""

from __future__ import annotations

from engine.system import nvml
from engine.system.platform import GpuInfo, PlatformInfo, report


def _cuda_gpus(notes: list[str]) -> tuple[bool, str | None, list[GpuInfo]]:
    try:
        import torch
    except Exception as exc:  # a broken torch install is reported, not fatal
        notes.append(f"torch could not be imported: {exc.__class__.__name__}")
        return False, None, []
    try:
        if not torch.cuda.is_available():
            return False, torch.version.cuda, []
        by_index = {r.index: r for r in nvml.readings()}
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            try:
                free, _total = torch.cuda.mem_get_info(index)
                free_mb: float | None = free / 2**20
            except Exception:
                free_mb = None
            reading = by_index.get(index)
            gpus.append(GpuInfo(
                index=index, name=props.name, total_mb=props.total_memory / 2**20, free_mb=free_mb,
                compute_capability=f"{props.major}.{props.minor}", bf16=props.major >= 8,
                util_percent=reading.util_percent if reading else None,
                temperature_c=reading.temperature_c if reading else None,
                power_w=reading.power_w if reading else None,
            ))
        return True, torch.version.cuda, gpus
    except Exception as exc:
        notes.append(f"CUDA probe failed: {exc}")
        return False, None, []


def _mps_available() -> bool:
    try:
        import torch

        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except Exception:
        return False


def probe() -> PlatformInfo:
    """The platform report, with CUDA and MPS as torch sees them. Never raises: a broken torch
    install is a note, and the machine is reported as a CPU one."""
    notes: list[str] = []
    cuda, cuda_version, gpus = _cuda_gpus(notes)
    return report(gpus, cuda, cuda_version, _mps_available(), notes)


def set_threads(threads: int) -> None:
    """Torch's CPU threads for this process (a worker gets its share of the cores)."""
    import torch

    torch.set_num_threads(threads)


def cuda_problem() -> str | None:
    """Why torch cannot use CUDA here (most often a driver older than the CUDA torch was built
    with, which NVML alone cannot see), or None when it can."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    said = " ".join(str(w.message).strip() for w in caught if "CUDA" in str(w.message))
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return said or f"torch.cuda.is_available() is False (torch {torch.__version__}, {build})"


def device_name(device: str) -> str:
    """The model of the device a worker trains on ("NVIDIA H200", "mps", the CPU's name): speed
    measurements are kept per device model."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple MPS"
    from engine.system.platform import cpu_model

    return cpu_model()
