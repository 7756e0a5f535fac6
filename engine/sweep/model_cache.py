"""The model check before a study exists, done once per (model, arguments, torch, timm).

`engine.training.models.check_models` imports timm and torch and builds every model the sweep
can pick on the meta device: a few seconds of every sweep's start, for an answer that only
changes when the model, its arguments or the installed packages do. Models that built are
remembered in the user's cache; a model that failed is never remembered, so it fails again.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path

from engine.artifacts import user_cache_dir, write_atomic
from engine.config import SweepConfig
from engine.errors import ConfigError

log = logging.getLogger("tui_hpo.engine")


def _versions() -> str:
    found = []
    for package in ("torch", "timm"):
        try:
            found.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package}=none")
    return " ".join(found)


def model_keys(config: SweepConfig) -> list[str]:
    """One key per model the sweep can pick, with everything `build_model` takes from the config
    that can make a build fail (the image size and drop rates are tried and dropped if refused)."""
    kwargs = json.dumps(config.train.model_kwargs, sort_keys=True, default=str)
    return [f"{_versions()} {name} {kwargs}" for name in config.models()]


def _load(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text(encoding="utf-8")).get("built", []))
    except (OSError, ValueError, AttributeError):
        return set()


def check_models_once(config: SweepConfig, cache: Path | None = None) -> bool:
    """Raise ConfigError unless every model of `config` builds; True when that took the real
    check (importing timm), False when the cache already knew."""
    if config.train.weights and not Path(config.train.weights).is_file():
        raise ConfigError(f"no such weights file: {config.train.weights}", key="train.weights")
    path = cache or user_cache_dir() / "models.json"
    known = _load(path)
    keys = model_keys(config)
    if all(k in known for k in keys):
        return False
    from engine.training.models import check_models

    check_models(config)
    try:
        write_atomic(path, json.dumps({"built": sorted(_load(path) | set(keys))}, indent=0) + "\n")
    except OSError as exc:  # a read-only home: the check runs again next time
        log.info("model check not cached (%s)", exc.strerror or exc)
    return True
