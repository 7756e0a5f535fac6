"""Layering: a resolved config is built from layers, later ones winning:
platform profile < preset / `extends:` chain < config file < environment < command-line flags.

Every layer is a plain dict, checked on its own before merging (so a broken file is an error
naming the file, even when a flag sets the same key), then the merged result is checked whole.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config.files import parse_yaml, read_yaml_file
from engine.config.formats import NOTES
from engine.config.names import check_study_name, default_study_name
from engine.config.presets import PRESET_DIR, preset_names
from engine.config.schema import SweepConfig, one_line_error, validate
from engine.config.space import canonical_param
from engine.errors import ConfigError

ENV_PREFIX = "TUI_HPO__"
# The origin documents' scripts took these from the environment; a value fixes the parameter
# (it leaves the search space), and EPOCHS means exactly that many (min_steps/max_steps off).
SEED_HABITS = {"SEED": "seed", "LEARNING_RATE": "lr", "BATCH_SIZE": "batch_size", "EPOCHS": "epochs"}


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path.exists():
        known = ", ".join(preset_names())
        raise ConfigError(f"unknown preset '{name}' (known: {known})", key="preset")
    return path


def load_layer(path: Path, platform: str, finetuning: bool = False, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One file with its `extends:` chain resolved and its foreign format translated. Each file
    of the chain is checked on its own first, so its mistakes are named with its path."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError("'extends' forms a cycle", source=str(path), key="extends")
    raw = read_yaml_file(path)
    layer = to_native(raw, str(path))
    layer = apply_platform_overlay(layer, platform, str(path))
    layer = apply_finetuning_overlay(layer, finetuning, str(path))
    parent = layer.pop("extends", None)
    check_layer(layer, str(path))
    if parent is None:
        return layer
    if not isinstance(parent, str):
        raise ConfigError("must be a file path or a preset name", source=str(path), key="extends")
    candidate = (path.parent / parent) if parent.endswith((".yaml", ".yml")) else None
    if candidate is None:
        try:
            candidate = preset_path(parent)
        except ConfigError as exc:
            raise ConfigError(exc.detail, source=str(path), key="extends") from None
    base = load_layer(candidate, platform, finetuning, (*_seen, path))
    base.pop("name", None)  # a study is named after the file that was run, not its parent
    return deep_merge(base, layer)


def apply_platform_overlay(layer: dict[str, Any], platform: str, source: str) -> dict[str, Any]:
    """`per_platform: {cpu: {...}, cuda: {...}}` applies the matching block on top of the file.
    Every block is checked, not only this platform's: a file broken for CUDA is broken here too."""
    overlays = layer.pop("per_platform", None)
    if overlays is None:
        return layer
    if not isinstance(overlays, dict) or not set(overlays) <= {"cpu", "cuda", "mps"}:
        raise ConfigError("must map cpu/cuda/mps to config blocks", source=source, key="per_platform")
    for name, block in overlays.items():
        if not isinstance(block, dict | None):
            raise ConfigError("must be a mapping", source=source, key=f"per_platform.{name}")
        check_layer(block or {}, source, f"per_platform.{name}")
    return deep_merge(layer, overlays.get(platform) or {})


def apply_finetuning_overlay(layer: dict[str, Any], finetuning: bool, source: str) -> dict[str, Any]:
    """`when_finetuning: {...}` applies on top of the file when the resolved config starts from
    trained weights (`train.weights` or `train.pretrained: true`): a pretrained start wants smaller
    learning rates and a longer warm-up than training from scratch, which is what presets are written for."""
    overlay = layer.pop("when_finetuning", None)
    if overlay is None:
        return layer
    if not isinstance(overlay, dict):
        raise ConfigError("must be a mapping", source=source, key="when_finetuning")
    check_layer(overlay, source, "when_finetuning")
    return deep_merge(layer, overlay) if finetuning else layer


def check_layer(layer: dict[str, Any], source: str, prefix: str = "") -> None:
    """One layer on its own: the types, bounds and key names of what it sets. Rules across keys
    wait for the merged config (a file may set the metric, and a preset the pruner it needs)."""
    alone = {k: v for k, v in layer.items() if k != NOTES}
    if isinstance(alone.get("search_space"), dict):  # null removes an inherited parameter
        alone["search_space"] = {k: v for k, v in alone["search_space"].items() if v is not None}
    try:
        SweepConfig.model_validate(alone)
        if isinstance(alone.get("name"), str):
            check_study_name(alone["name"], "name")
    except ValidationError as exc:
        error = one_line_error(exc, source)
        raise ConfigError(error.detail, source=source, key=".".join(filter(None, [prefix, error.key]))) from None
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, key=".".join(filter(None, [prefix, exc.key]))) from None


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in `top` replaces what `base` had.

    `search_space` entries are replaced whole: a narrower range in a child file should not
    inherit `choices` or `log` from the parent's definition of the same parameter. An entry set
    to null removes the inherited parameter (it is then fixed at its `train:` value).
    """
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if key == "search_space" and isinstance(value, dict) and isinstance(merged.get(key, {}), dict):
            space = {**merged.get(key, {}), **copy.deepcopy(value)}  # null with nothing below: nothing to remove
            merged[key] = {name: spec for name, spec in space.items() if spec is not None}
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ---------------------------------------------------------------- foreign formats


def to_native(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Recognise the W&B sweep and the Optuna-guide layouts and map them onto ours."""
    if "method" in raw and "parameters" in raw:
        from engine.config.formats import from_wandb

        return from_wandb(raw, source)
    if "optuna" in raw or "quick_validation" in raw:
        from engine.config.formats import from_optuna_guide

        return from_optuna_guide(raw, source)
    out = dict(raw)
    if isinstance(out.get("objective"), dict) and out["objective"].get("command"):
        return out  # a program's parameters keep the names it knows them by
    if isinstance(out.get("train"), dict):
        out["train"] = {canonical_param(k): v for k, v in out["train"].items()}
    if isinstance(out.get("search_space"), dict):
        out["search_space"] = {canonical_param(str(k)): v for k, v in out["search_space"].items()}
    return out


# ---------------------------------------------------------------- environment and flags


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TUI_HPO__TRAIN__LR=1e-4` -> {"train": {"lr": 1e-4}}; values are parsed as YAML scalars.
    `SEED`, `LEARNING_RATE`, `BATCH_SIZE` and `EPOCHS` (`SEED_HABITS`) fix those parameters,
    unless a TUI_HPO__TRAIN__ variable sets the same one."""
    layer: dict[str, Any] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in var[len(ENV_PREFIX):].split("__")]
        if not all(keys):
            raise ConfigError("empty key segment (use TUI_HPO__SECTION__KEY)", source=f"environment {var}")
        value = parse_yaml(environ[var], f"environment {var}")
        node = layer
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError("conflicts with another variable", source=f"environment {var}")
        node[keys[-1]] = value
    if isinstance(layer.get("train"), dict):
        layer["train"] = {canonical_param(k): v for k, v in layer["train"].items()}
    for var, key in SEED_HABITS.items():
        if var not in environ or key in (layer.get("train") or {}):
            continue
        if not isinstance(layer.setdefault("train", {}), dict):
            raise ConfigError("conflicts with TUI_HPO__TRAIN", source=f"environment {var}")
        layer["train"][key] = parse_yaml(environ[var], f"environment {var}")
        if key == "epochs":
            layer["train"] |= {"min_steps": None, "max_steps": None}
        space = layer.setdefault("search_space", {})
        if isinstance(space, dict):
            space[key] = None  # fixed: out of the search space
    return layer


def flags_layer(n_trials: int | None = None, timeout: float | None = None, data: str | None = None,
                labels: str | None = None, id_column: str | None = None, label_column: str | None = None,
                parallel: int | None = None, trials_per_gpu: int | None = None, val_data: str | None = None,
                test_data: str | None = None, backend: str | None = None) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if backend is not None:
        layer["backend"] = backend
    if n_trials is not None:
        layer.setdefault("budget", {})["n_trials"] = n_trials
    if timeout is not None:
        layer.setdefault("budget", {})["timeout"] = timeout
    if data is not None:
        layer.setdefault("data", {})["path"] = data
    if labels is not None:
        layer.setdefault("data", {})["labels"] = labels
    if val_data is not None:
        layer.setdefault("data", {})["val"] = val_data
    if test_data is not None:
        layer.setdefault("data", {})["test"] = test_data
    if id_column is not None:
        layer.setdefault("data", {})["id_column"] = id_column
    if label_column is not None:
        layer.setdefault("data", {})["label_column"] = label_column
    if parallel is not None:
        layer.setdefault("resources", {})["parallel"] = parallel
    if trials_per_gpu is not None:
        layer.setdefault("resources", {})["trials_per_gpu"] = trials_per_gpu
    return layer


def set_keys(layer: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys a layer sets (`train.lr`; a search-space entry counts whole: `search_space.lr`)."""
    keys = []
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if path == "search_space" and isinstance(value, Mapping):
            keys += [f"search_space.{name}" for name in value]
        elif isinstance(value, Mapping) and value:
            keys += set_keys(value, f"{path}.")
        else:
            keys.append(path)
    return keys


def resolve(platform_layer: dict[str, Any], preset: str | None = None, config_file: str | None = None,
            environ: Mapping[str, str] | None = None, flags: dict[str, Any] | None = None,
            platform: str = "cpu", origins: dict[str, str] | None = None) -> SweepConfig:
    """All layers merged and checked. The preset defaults to `quick` when no file is given. The
    config's `name` is the file's `name:`, else a slug of its file name, else the preset's (None
    only for a file whose name has nothing to slug: `study_name` then asks for --study).

    Two passes, as for the platform: the first finds whether the config fine-tunes (any layer
    may set `train.weights` or `train.pretrained`), the second applies the files' `when_finetuning`
    blocks if so. `origins`, when given, is filled with the layer that set each key last (`tui-hpo
    validate` shows it)."""
    env = env_layer(environ if environ is not None else os.environ)
    check_layer(env, "environment")
    check_layer(flags or {}, "command line")
    source = str(config_file) if config_file is not None else None

    def merge(finetuning: bool) -> dict[str, Any]:
        layers: list[tuple[str, dict[str, Any]]] = [("platform profile", platform_layer)]
        if preset is not None or config_file is None:
            preset_layer = load_layer(preset_path(preset or "quick"), platform, finetuning)
            if config_file is not None:
                preset_layer.pop("name", None)  # the file that was run names the study
            layers.append((f"preset {preset or 'quick'}", preset_layer))
        if config_file is not None:
            layers.append((Path(config_file).name, load_layer(Path(config_file), platform, finetuning)))
        merged: dict[str, Any] = {}
        for label, layer in [*layers, ("environment", env), ("command line", flags or {})]:
            merged = deep_merge(merged, layer)
            if origins is not None:
                origins.update(dict.fromkeys(set_keys({k: v for k, v in layer.items() if k != NOTES}), label))
        return merged

    merged = merge(False)
    train = merged.get("train") or {}
    if train.get("weights") or train.get("pretrained") is True:
        if origins is not None:
            origins.clear()
        merged = merge(True)
    merged["name"] = default_study_name(merged.get("name"), config_file, preset)
    notes = merged.pop(NOTES, [])
    config = validate(merged, source)
    config.notes = list(notes)
    return config


def apply_batch_multiplier(config: SweepConfig) -> float:
    """Scale the batch size and its search range by the profile's multiplier, once, so the saved
    config shows what runs (and says multiplier 1.0, so loading it again does not scale twice)."""
    factor = config.resources.batch_multiplier or 1.0
    if factor == 1.0 or config.runs_command:  # a program's batch_size is its own, passed as written
        config.resources.batch_multiplier = 1.0
        return 1.0

    def scale(b: Any) -> int:
        return max(1, round(float(b) * factor))

    if config.train.batch_size != "auto":  # a measured batch is what fits: never scaled
        config.train.batch_size = scale(config.train.batch_size)
    spec = config.search_space.get("batch_size")
    if spec is not None:
        ranges: list[Any] = [spec, *(case for cases in (spec.by or {}).values() for case in cases.values())]
        for r in ranges:  # the parameter's own choices or range, and each per-value case's
            if r.choices is not None:
                r.choices = sorted({scale(c) for c in r.choices})
            if r.low is not None:
                r.low = scale(r.low)
            if r.high is not None:
                r.high = max(scale(r.high), (r.low or spec.low or 0) + 1)
    config.resources.batch_multiplier = 1.0
    return factor
