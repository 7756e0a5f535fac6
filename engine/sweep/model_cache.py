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
from engine.system import timm_names

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
    pretrained = " pretrained" if hub_models(config) else ""
    return [f"{_versions()} {name} {kwargs}{pretrained}" for name in config.models()]


def pretrained_values(config: SweepConfig) -> set[bool]:
    """The values `train.pretrained` can take in a trial: the fixed one, or the search space's."""
    spec = config.search_space.get("pretrained")
    if spec is None:
        return {config.train.pretrained}
    cases = [spec.choices or [], *(c.choices or [] for by in (spec.by or {}).values() for c in by.values())]
    return {str(v).lower() in ("true", "1", "yes") for choices in cases for v in choices}


def hub_models(config: SweepConfig) -> list[str]:
    """The models that may start from timm's pretrained weights: pretrained can be true, and
    `train.weights` gives them no file of their own."""
    if True not in pretrained_values(config) or isinstance(config.train.weights, str):
        return []
    return [name for name in config.models() if name not in (config.train.weights or {})]


def check_weight_files(config: SweepConfig) -> None:
    """Every file `train.weights` names exists."""
    weights = config.train.weights
    files = {"train.weights": weights} if isinstance(weights, str) else \
        {f"train.weights.{name}": file for name, file in (weights or {}).items()}
    for key, file in files.items():
        if not Path(file).is_file():
            raise ConfigError(f"no such weights file: {file}", key=key)
        if (why := not_weights(Path(file))) is not None:
            raise ConfigError(f"{file} {why}", key=key)


def not_weights(file: Path) -> str | None:
    """Why `file` cannot be a weights file, from its first bytes and without torch (a text file,
    a truncated download); None when it may be one. Whether it fits the model is the loader's."""
    with open(file, "rb") as fh:
        head = fh.read(8)
        if file.suffix.lower() == ".safetensors":
            length = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 0 < length <= file.stat().st_size - 8:
                return "is not a safetensors file (no header of a length that fits the file)"
            try:
                json.loads(fh.read(length))
            except ValueError:
                return "is not a safetensors file (its header is not JSON)"
            return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save: a zip, or a pickle of old
        return None
    return "is not a PyTorch checkpoint (torch.save writes a zip archive) nor a .safetensors file"


def _load(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text(encoding="utf-8")).get("built", []))
    except (OSError, ValueError, AttributeError):
        return set()


def check_models_once(config: SweepConfig, cache: Path | None = None) -> bool:
    """Raise ConfigError unless every model of `config` builds; True when that took the real
    check (importing timm), False when the cache already knew. Pretrained weights are looked for
    in the Hugging Face cache on every start (it changes under us), which imports timm."""
    check_weight_files(config)
    path = cache or user_cache_dir() / "models.json"
    known = _load(path)
    keys = model_keys(config)
    hub = hub_models(config)
    if all(k in known for k in keys) and not hub:
        return False
    listed = timm_names.known()
    for i, name in enumerate(config.models()):
        if listed is not None and not listed.knows(name):  # a typo: answered without importing timm
            raise timm_names.unknown_model(name, listed.names, config.model_key(i))
    from engine.training.models import check_models, check_pretrained

    if hub:
        check_pretrained(hub)
    if all(k in known for k in keys):
        return True
    check_models(config)
    try:
        write_atomic(path, json.dumps({"built": sorted(_load(path) | set(keys))}, indent=0) + "\n")
    except OSError as exc:  # a read-only home: the check runs again next time
        log.info("model check not cached (%s)", exc.strerror or exc)
    return True
