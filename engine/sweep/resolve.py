"""From command-line arguments to a resolved config for this machine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import config as cfg
from engine.config.space import grid_points
from engine.system.platform import PlatformInfo, choose_platform, probe_for_sweep, profile
from engine.training.devices import probe


@dataclass(frozen=True)
class Resolved:
    config: cfg.SweepConfig
    info: PlatformInfo
    platform: str
    batch_scale: float  # the profile's batch multiplier, already applied to config
    source: str | None = None  # the config file, named in errors found after resolving
    notes: tuple[str, ...] = ()  # what resolving changed that the user should hear (a capped budget)


def resolve_run(preset: str | None, config_file: str | None, flags: dict[str, Any],
                environ: Mapping[str, str] | None = None, info: PlatformInfo | None = None,
                origins: dict[str, str] | None = None) -> Resolved:
    """All layers for this machine. The device may be set by any layer, so a first pass without
    a profile finds the platform, and the second pass puts that platform's profile underneath.
    The first pass runs before the probe, so bad input fails fast. The probe asks NVML and reads
    how torch was built; only where that cannot tell which GPUs CUDA shows does it import torch.
    `origins` is filled as `config.resolve` fills it."""
    draft = cfg.resolve({}, preset=preset, config_file=config_file, environ=environ, flags=flags,
                        platform="cpu")
    info = info or probe_for_sweep() or probe()
    platform = choose_platform(info, draft.resources.device)
    layer = profile(info, platform, draft.resources.gpus, draft.resources.trials_per_gpu)
    if draft.runs_command and platform != "cuda":
        # A program uses the cores as it likes: one trial at a time unless asked (on GPUs, one per GPU)
        layer["resources"]["parallel"] = 1
    config = cfg.resolve(layer, preset=preset, config_file=config_file, environ=environ, flags=flags,
                         platform=platform, origins=origins)
    config.resources.device = platform
    # Workers may run elsewhere (another cwd, another machine): paths are stored absolute.
    if config.data.path is not None:
        config.data.path = str(Path(config.data.path).expanduser().resolve())
    if config.data.labels is not None:
        config.data.labels = str(Path(config.data.labels).expanduser().resolve())
    if config.runs_command:  # a program runs in its config file's folder unless told otherwise
        base = Path(config_file).resolve().parent if config_file is not None else Path.cwd()
        config.objective.cwd = str((base / Path(config.objective.cwd or ".").expanduser()).resolve())
    scale = cfg.apply_batch_multiplier(config)  # first: scaling may merge two batch choices into one grid point
    notes = tuple(n for n in [*config.notes, cap_to_grid(config)] if n)
    return Resolved(config, info, platform, scale, config_file, notes)


def cap_to_grid(config: cfg.SweepConfig) -> str | None:
    """A grid sweep has as many trials as grid points, at most: n_trials is capped (it is the
    sweep's budget, and past the last point the grid sampler only runs points again). The points
    are the valid combinations (`when`/`by` applied), not the product of the value lists.
    Returns the note to show."""
    if config.sampler.name != "grid":
        return None
    points = len(grid_points(config.search_space, config.fixed()))
    if config.budget.n_trials <= points:
        return None
    config.budget.n_trials = points
    return f"the grid has {points} points: n_trials capped at {points}"
