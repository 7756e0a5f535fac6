"""`batch_size: auto` at a sweep's start: each model's largest batch on this machine's GPU, from
the user's cache where it was measured before, else measured once by a child process (the engine
never imports torch). Passed to `engine.datasets.defaults.apply`, which puts the batches into
the config."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from engine.config import SweepConfig
from engine.errors import ConfigError
from engine.system import batch_sizes
from engine.system.gpu_classes import memory_class
from engine.system.platform import PlatformInfo

MEASURE_TIMEOUT_S = 900  # a few models, a dozen training-step runs each


def _torch_version() -> str:
    try:
        return metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "none"


def measure_batches(config: SweepConfig, info: PlatformInfo) -> dict[str, int]:
    """Batch per model of `config`, on the smallest of the sweep's GPUs (trials may land on any)."""
    gpus = [g for g in info.gpus if config.resources.gpus is None or g.index in config.resources.gpus]
    gpu = min(gpus or info.gpus, key=lambda g: g.total_mb)
    amp = config.resources.amp or "off"
    channels_last = bool(config.resources.channels_last)
    image_size = int(config.train.image_size)
    safety = memory_class(gpu.total_mb).safety
    batches: dict[str, int] = {}
    missing = []
    for model in config.models():
        known = batch_sizes.remembered(batch_sizes.cache_key(gpu.name, model, image_size, amp, channels_last,
                                                             _torch_version()))
        if known is not None and known.safety == safety:
            batches[model] = known.batch
        else:
            missing.append(model)
    if missing:
        args = [sys.executable, "-m", "engine.training.batch_finder", "--models", ",".join(missing),
                "--image-size", str(image_size), "--device", f"cuda:{gpu.index}", "--amp", amp]
        done = subprocess.run(args + (["--channels-last"] if channels_last else []), capture_output=True, text=True,
                              timeout=MEASURE_TIMEOUT_S)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise ConfigError(f"auto: measuring the batch failed: {reason}", key="train.batch_size")
        batches.update({model: int(found["batch"]) for model, found in json.loads(done.stdout).items()})
    return batches
