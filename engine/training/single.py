"""One training run outside any sweep: `tui-hpo train --config best_config.yaml`."""

from __future__ import annotations

import time
from typing import Any

from engine.artifacts import user_cache_dir
from engine.config import SweepConfig
from engine.datasets import defaults as data_defaults
from engine.datasets.scan import scan, splits
from engine.system.platform import usable_cores
from engine.training.fit import Runtime, fit
from engine.training.models import check_models


def train_once(config: SweepConfig, platform: str) -> dict[str, Any]:
    """Train `config.train` on the first split (the sweep's hold-out split) and return metrics.

    Uses one thread per worker, as a sweep trial on this machine did, so the numbers match the
    trial's on the CPU (floating-point sums depend on the thread count).
    """
    import torch

    found = scan(config.data)
    data_defaults.apply(config, found)  # a config with "auto" settings gets what a sweep would choose
    check_models(config)
    from engine.training.tensors import load

    threads = config.resources.threads_per_worker or max(1, usable_cores() // (config.resources.parallel or 1))
    torch.set_num_threads(threads)
    device = {"cuda": "cuda:0", "mps": "mps"}.get(platform, "cpu")
    data = load(found, config.data, config.train.image_size, cache_dir=user_cache_dir() / "images")
    split = splits(data.labels.numpy(), config.data)[0]
    started = time.perf_counter()
    _model, history = fit(config.train, data, split, Runtime.from_resources(config.resources, device))
    return {"device": device, "seconds": time.perf_counter() - started, "threads": threads,
            "final": history[-1].to_dict(), "epochs": [m.to_dict() for m in history]}
