"""The machine: the platform report and the training profile it implies, NVML readings that never
raise, and the monitor's samples. Never imports torch (`engine.training.devices` asks torch).

- `platform`: OS, CPU, RAM, GPUs and MPS; the per-platform profile (`profile`, `choose_platform`).
- `nvml`: NVIDIA readings, empty when there is no driver.
- `monitor`: one system reading per tick, for the samples table.
- `benchmarks`: what `tui-hpo gpu benchmark` measured, kept per device in the user cache.
- `gpu_classes`: memory classes (batch multiplier, packing, safety share) and advice per card.
- `batch_sizes`: the search for the largest batch and its cache (`batch_size: auto`).
- `hf_cache`: pretrained weights in the local Hugging Face cache, found without timm.
"""

from engine.system.platform import GpuInfo, PlatformInfo, choose_platform, probe_without_torch, profile, usable_cores

__all__ = ["GpuInfo", "PlatformInfo", "choose_platform", "probe_without_torch", "profile", "usable_cores"]
