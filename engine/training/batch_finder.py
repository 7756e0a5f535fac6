"""The largest batch of a model that trains on a GPU, by real training steps (forward, backward,
optimizer step with its state), remembered per (GPU, model, image size, precision, layout, torch).

Memory is what the steps allocate, so the inputs are random tensors of the trial's shape: no data
is read. Each candidate runs two steps (the optimizer's state exists from the first step on) and
fits unless CUDA runs out of memory. `engine.system.batch_sizes` holds the search and the cache;
the engine, which never imports torch, runs this module as a process: `python -m
engine.training.batch_finder --model M --image-size S --amp bf16 --json`.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from engine.config import SweepConfig, TrainConfig
from engine.system import batch_sizes
from engine.system.batch_sizes import Found
from engine.system.gpu_classes import memory_class
from engine.training.fit import build_optimizer
from engine.training.models import build_model

STEPS = 2
NUM_CLASSES = 10  # the head's size hardly matters next to the activations


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def training_fits(model: nn.Module, image_size: int, device: torch.device, amp: str,
                  channels_last: bool) -> Callable[[int], bool]:
    """A test of one batch size: STEPS training steps of `model` at that batch; False when the
    device runs out of memory (CUDA's error, or MemoryError on the host)."""
    cfg = TrainConfig(model="resnet18", image_size=image_size, batch_size=1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def steps(batch: int) -> None:
        optimizer = build_optimizer(model, cfg)
        scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        for _ in range(STEPS):
            x = torch.randn(batch, 3, image_size, image_size, device=device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                loss = nn.functional.cross_entropy(model(x), y)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def fits(batch: int) -> bool:
        try:
            steps(batch)  # its tensors and optimizer state are gone once it returns or raises
            ok = True
        except (torch.cuda.OutOfMemoryError, MemoryError):
            ok = False  # the exception (and the frames it holds) is dropped at the end of this block
        model.zero_grad(set_to_none=True)
        _free(device)
        return ok

    return fits


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}"


def find_batch(model_name: str, image_size: int, device: str = "cuda:0", amp: str = "bf16",
               channels_last: bool = True, safety: float | None = None, limit: int = batch_sizes.LIMIT,
               fresh: bool = False) -> tuple[Found, bool]:
    """(what was found, whether it came from the cache). The safety share follows the card's
    memory class (engine.system.gpu_classes) unless given."""
    where = torch.device(device)
    total_mb = torch.cuda.get_device_properties(where).total_memory / 2**20 if where.type == "cuda" else None
    if safety is None:
        safety = memory_class(total_mb).safety if total_mb else 0.9
    key = batch_sizes.cache_key(device_name(where), model_name, image_size, amp, channels_last,
                                torch.__version__.split("+")[0])
    known = None if fresh else batch_sizes.remembered(key)
    if known is not None and known.safety == safety and known.largest <= limit:
        return known, True
    model = build_model(TrainConfig(model=model_name, image_size=image_size), NUM_CLASSES).to(where)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    fits = training_fits(model, image_size, where, amp, channels_last)
    peaks: dict[int, float] = {}

    def measured(batch: int) -> bool:
        if where.type == "cuda":
            torch.cuda.reset_peak_memory_stats(where)
        ok = fits(batch)
        if ok and where.type == "cuda":
            peaks[batch] = torch.cuda.max_memory_allocated(where) / 2**20
        return ok

    largest, tried = batch_sizes.largest_batch(measured, limit=limit)
    del model
    _free(where)
    if largest == 0:
        raise MemoryError(f"{model_name} at {image_size} px does not train even at batch 1 on {device_name(where)}")
    found = Found(largest=largest, batch=batch_sizes.safe_batch(largest, safety), safety=safety,
                  peak_mb=peaks.get(largest), total_mb=total_mb, tried=tried)
    batch_sizes.remember(key, found)
    return found, False


def batches_for(config: SweepConfig, device: str = "cuda:0") -> dict[str, int]:
    """Each model's batch for `config` on `device`, in this process (`tui-hpo train` imports
    torch anyway; the engine runs `main` as a child process instead)."""
    amp, channels_last = config.resources.amp or "off", bool(config.resources.channels_last)
    return {model: find_batch(model, int(config.train.image_size), device, amp, channels_last)[0].batch
            for model in config.models()}


def main(argv: list[str] | None = None) -> int:
    """The engine's entry: each model's batch as one JSON object on stdout, keyed by model; a
    problem as one line on stderr and exit code 1."""
    parser = argparse.ArgumentParser(prog="python -m engine.training.batch_finder")
    parser.add_argument("--models", required=True, help="comma-separated timm names")
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--amp", default="bf16", choices=["off", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args(argv)
    out = {}
    for model in args.models.split(","):
        try:
            found, cached = find_batch(model, args.image_size, args.device, args.amp, args.channels_last)
        except (MemoryError, RuntimeError, ValueError) as exc:
            print(f"{model}: {exc}", file=sys.stderr)
            return 1
        out[model] = {**asdict(found), "cached": cached}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
