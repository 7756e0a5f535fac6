"""The machine: the platform report and the training profile it implies, NVML readings that never
raise, and the monitor's samples. Never imports torch (`engine.training.devices` asks torch).

- `platform`: OS, CPU, RAM, GPUs and MPS; the per-platform profile (`profile`, `choose_platform`).
- `nvml`: NVIDIA readings, empty when there is no driver.
- `monitor`: one system reading per tick, for the samples table.
"""

from engine.system.platform import GpuInfo, PlatformInfo, choose_platform, probe_without_torch, profile, usable_cores

__all__ = ["GpuInfo", "PlatformInfo", "choose_platform", "probe_without_torch", "profile", "usable_cores"]
