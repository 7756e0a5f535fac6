"""Resumable training: a running trial's whole state, saved every `checkpoints.every` epochs (or at
the end of the first epoch after `checkpoints.every_minutes`: epochs of an hour on a big dataset) to
`DIR/<study>/resume/trial_<n>.pt`, so a rerun (after Ctrl-C, a stop, or a worker that died) goes on
from the last saved epoch instead of the first, and on the CPU ends exactly as an uninterrupted run.

The state is what `fit` carries between epochs: the weights, the optimizer, the schedule's clock,
the gradient scaler, every random generator (torch's, numpy's, Python's and the loop's own), the
history so far and the early-stopping best weights. A file is only read back for the same training
config (`TrainConfig`): an out-of-memory step down to a smaller batch starts the run again.

`n` is the first trial of a chain of reruns (its `retry_of`), so every rerun finds the file.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.artifacts import write_atomic
from engine.config import TrainConfig

FOLDER = "resume"
FORMAT = 1


@dataclass
class ResumeFile:
    """Where one run (a trial's fold) saves its state, and how often (every `every` epochs, and
    at an epoch's end once `every_s` seconds have passed since the last save or the start); `fit`
    sets `resumed_from` (the first epoch it trained, counted from 0) when it went on from a saved state."""

    path: Path
    every: int | None = None
    every_s: float | None = None
    resumed_from: int | None = None
    # A population-based-training exploit: the saved state is another run's, and this run's own
    # hyperparameters (a mutated config) replace the ones it was saved with (`adopt`).
    adopt: bool = False
    clock: Callable[[], float] = time.monotonic
    last_saved: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.last_saved = self.clock()

    def due(self, epoch: int) -> bool:
        """Whether the state after `epoch` (counted from 0) is to be saved."""
        by_epochs = self.every is not None and (epoch + 1) % self.every == 0
        return by_epochs or (self.every_s is not None and self.clock() - self.last_saved >= self.every_s)


def path_of(folder: Path, number: int, fold: int = 0, folds: int = 1) -> Path:
    """`DIR/<study>/resume/trial_<number>.pt` (with k folds, one file per fold: `..._fold<k>.pt`)."""
    name = f"trial_{number}.pt" if folds == 1 else f"trial_{number}_fold{fold}.pt"
    return folder / FOLDER / name


def remove(folder: Path, number: int) -> None:
    """Delete trial `number`'s resume files: it finished, or will never run again."""
    for path in [*(folder / FOLDER).glob(f"trial_{number}.pt"), *(folder / FOLDER).glob(f"trial_{number}_fold*.pt")]:
        path.unlink(missing_ok=True)


def save(resume: ResumeFile, loop: Any, cfg: TrainConfig, epoch: int, history: list[dict[str, Any]],
         best_state: dict[str, torch.Tensor]) -> None:
    """Write the state after `epoch` (counted from 0) atomically: a crash mid-write keeps the last file."""
    state = {
        "format": FORMAT, "config": cfg.model_dump(mode="json"), "epoch": epoch, "history": history,
        "model": {k: v.detach().cpu() for k, v in loop.eager.state_dict().items()},
        "optimizer": loop.optimizer.state_dict(), "schedule": loop.schedule.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None, "updates": loop.updates,
        "best_state": best_state,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "loop": loop.generator.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if loop.device.type == "cuda" else None},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(resume.path, buffer.getvalue())
    resume.last_saved = resume.clock()


# What a saved state's weights and clock are bound to: an adopted state (PBT) must agree on these,
# while the hyperparameters that only steer the optimisation may differ.
ARCHITECTURE = ("model", "model_kwargs", "pretrained", "weights", "epochs", "seed")


def load(resume: ResumeFile, cfg: TrainConfig) -> dict[str, Any] | None:
    """The saved state, when there is one for this training config (with `resume.adopt`, for the
    same architecture); None otherwise (no file, an unreadable one, another format or config:
    the run starts from its first epoch)."""
    try:
        state = torch.load(resume.path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    own = cfg.model_dump(mode="json")
    if resume.adopt:
        saved = state.get("config") or {}
        return state if all(saved.get(key) == own.get(key) for key in ARCHITECTURE) else None
    return state if state.get("config") == own else None


def restore(loop: Any, state: dict[str, Any], adopt: bool = False) -> None:
    """Put a freshly built loop (`fit.build_loop`) back where `state` was saved. With `adopt`
    (a PBT exploit) the weights, the optimizer's moments and the clock are the saved run's, but
    the learning rate, weight decay and schedule stay this loop's own: the mutated values apply
    from the next step, at the same point of the schedule."""
    loop.eager.load_state_dict(state["model"])
    own = [{k: v for k, v in group.items() if k != "params"} for group in loop.optimizer.param_groups] if adopt else []
    loop.optimizer.load_state_dict(state["optimizer"])
    if adopt:
        for group, hyper in zip(loop.optimizer.param_groups, own, strict=True):
            group.update(hyper)
    else:
        loop.schedule.load_state_dict(state["schedule"])
    if loop.scaler is not None and state["scaler"] is not None:
        loop.scaler.load_state_dict(state["scaler"])
    loop.updates = state["updates"]
    if adopt:
        loop.schedule.step_update(loop.updates)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    loop.generator.set_state(rng["loop"])
    if rng["cuda"] is not None and loop.device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
