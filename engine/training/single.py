"""One training run outside any sweep: `tui-hpo train --config best_config.yaml`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.artifacts import user_cache_dir
from engine.config import SweepConfig
from engine.datasets import defaults as data_defaults
from engine.datasets.scan import parts_of, scan, splits
from engine.system.platform import usable_cores
from engine.training.batch_finder import batches_for
from engine.training.fit import Runtime, fit
from engine.training.models import check_models
from engine.training.package import package_meta, save_package
from engine.training.tensors import ImageData, load


@dataclass(frozen=True)
class Prepared:
    """What a run outside a sweep trains on: the images, the hold-out split, the device."""

    data: ImageData
    split: tuple[np.ndarray, np.ndarray]
    device: str
    threads: int


def prepare(config: SweepConfig, platform: str, cache_dir: Path | None = None) -> Prepared:
    """Resolve `config` against its data, as a sweep would, and load the images (decoded into
    `cache_dir`, else the user's cache) with the first split (the sweep's hold-out split).

    Uses one thread per worker, as a sweep trial on this machine did, so the numbers match the
    trial's on the CPU (floating-point sums depend on the thread count).
    """
    import torch

    found = scan(config.data)
    # A config with "auto" settings gets what a sweep would choose.
    data_defaults.apply(config, found, batches_for if platform == "cuda" else None)
    check_models(config)
    threads = config.resources.threads_per_worker or max(1, usable_cores() // (config.resources.parallel or 1))
    torch.set_num_threads(threads)
    device = {"cuda": "cuda:0", "mps": "mps"}.get(platform, "cpu")
    data = load(found, config.data, config.train.image_size, cache_dir=cache_dir or user_cache_dir() / "images")
    split = splits(data.labels.numpy(), config.data, parts_of(data.scan))[0]
    return Prepared(data, split, device, threads)


def train_once(config: SweepConfig, platform: str, out: Path | None = None, full: bool = False) -> dict[str, Any]:
    """Train `config.train` on the first split (the sweep's hold-out split) and return metrics;
    with `out`, save the model there as a package (`engine.training.package`). `full` trains on
    the training and validation images together (the final model, once the search has chosen):
    its validation metrics are then measured on images it trained on."""
    run = prepare(config, platform)
    split = (np.concatenate(run.split), run.split[1]) if full else run.split
    started = time.perf_counter()
    model, history = fit(config.train, run.data, split, Runtime.from_resources(config.resources, run.device))
    result = {"device": run.device, "seconds": time.perf_counter() - started, "threads": run.threads,
              "final": history[-1].to_dict(), "epochs": [m.to_dict() for m in history], "full": full,
              "train_images": len(split[0])}
    if out is not None:
        mean, std = run.data.mean_std(config.train.image_size, split[0])
        save_package(out, model, package_meta(
            train=config.train.model_dump(mode="json"), data=config.data.model_dump(mode="json"),
            classes=run.data.scan.classes, image_size=config.train.image_size, decode_size=config.train.image_size,
            mean=mean, std=std, metrics=history[-1].to_dict(), fold=0, full=full))
        result["package"] = str(out)
    return result
