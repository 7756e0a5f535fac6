"""Sweep configuration: schema, layering, and the foreign formats users bring.

A resolved config is built from layers, later ones winning:
platform profile < preset / `extends:` chain < config file < environment < command-line flags.
Every layer is a plain dict; pydantic checks types and unknown keys of the merged result, and
`check()` adds the cross-field rules. Errors name the file and the key path in one line.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import ConfigError
from engine.space import PARAM_ALIASES, ParamSpec, canonical_param, check_space

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESET_DIR = CONFIG_DIR / "presets"
ENV_PREFIX = "TUI_HPO__"

MetricName = Literal["val_f1", "val_accuracy", "val_loss", "train_loss", "train_time"]
METRIC_DIRECTIONS = {
    "val_f1": "maximize", "val_accuracy": "maximize",
    "val_loss": "minimize", "train_loss": "minimize", "train_time": "minimize",
}
METRIC_ALIASES = {
    "f1": "val_f1", "macro_f1": "val_f1", "f1_macro": "val_f1", "val_macro_f1": "val_f1",
    "accuracy": "val_accuracy", "acc": "val_accuracy", "val_acc": "val_accuracy",
    "loss": "val_loss", "time": "train_time", "duration": "train_time",
}


def canonical_metric(name: str) -> str:
    """`eval/f1`, `val/accuracy`, `val_acc` ... -> the metric key we record."""
    raw = name.strip()
    for prefix in ("eval/", "val/", "eval_", "validation/"):
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
            if raw.startswith("train"):
                break
            raw = METRIC_ALIASES.get(raw, f"val_{raw}" if not raw.startswith("val_") else raw)
            break
    if raw.startswith("train/"):
        raw = "train_" + raw[len("train/"):]
    return METRIC_ALIASES.get(raw, raw)


class Section(BaseModel):
    # No inf/nan anywhere: `lr: .inf` would validate (> 0) and then fail every trial.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    path: str | None = Field(None, min_length=1)  # None: the embedded digits dataset ("" is not ".")
    labels: str | None = Field(None, min_length=1)  # CSV layout: the labels file
    id_column: str = "ID"
    label_column: str = "target"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(1, ge=1, le=20)
    subset: int | None = Field(None, ge=4)  # use at most this many images (stratified): fast screening
    split_seed: int = 0
    cache_limit_mb: int = Field(2048, ge=0)
    loader_workers: int = Field(0, ge=0)


class TrainConfig(Section):
    model: str = "test_resnet"
    weights: str | None = Field(None, min_length=1)  # a checkpoint on disk; nothing is ever downloaded
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    accum_steps: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    drop_path: float = Field(0.0, ge=0, lt=1)
    image_size: int = Field(32, ge=8, le=1024)
    augment: float = Field(0.0, ge=0, le=1)
    seed: int = 0


TUNABLE = set(TrainConfig.model_fields) - {"model_kwargs", "weights"}


class ResourcesConfig(Section):
    """Platform settings. `None` means: take the platform profile's value."""

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    parallel: int | None = Field(None, ge=1, le=256)
    threads_per_worker: int | None = Field(None, ge=1)
    amp: Literal["off", "bf16", "fp16"] | None = None
    compile: bool | None = None
    channels_last: bool | None = None
    pin_memory: bool | None = None
    batch_multiplier: float | None = Field(None, gt=0, le=16)
    trials_per_gpu: int = Field(1, ge=1, le=16)
    gpus: list[int] | None = None


class CheckpointsConfig(Section):
    """Trial weights kept in DIR/<study>/checkpoints/: the best `keep`, within `budget_mb`."""

    keep: int = Field(1, ge=0, le=1000)
    budget_mb: float | None = Field(None, gt=0)


class ObjectiveConfig(Section):
    metric: str | list[str] = "val_f1"
    direction: Literal["maximize", "minimize"] | list[Literal["maximize", "minimize"]] | None = None

    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    def directions(self) -> list[str]:
        if self.direction is None:
            return [METRIC_DIRECTIONS.get(m, "maximize") for m in self.metrics()]
        return [self.direction] if isinstance(self.direction, str) else list(self.direction)


SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "nsga2")
PRUNERS = ("none", "median", "successive_halving", "hyperband", "wilcoxon", "percentile", "threshold")


class SamplerConfig(Section):
    name: str = "tpe"
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(Section):
    name: str = "median"
    patience: int | None = Field(None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class BudgetConfig(Section):
    n_trials: int = Field(20, ge=1, le=2**31 - 1)  # stored in a 32-bit INTEGER column (PostgreSQL)
    timeout: float | None = Field(None, gt=0)
    max_consecutive_failures: int = Field(5, ge=1)
    max_retries: int = Field(1, ge=0, le=10)  # reruns of a trial whose worker died, same params


class SweepConfig(Section):
    name: str | None = None
    description: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def models(self) -> list[str]:
        spec = self.search_space.get("model")
        return [str(m) for m in spec.choices] if spec and spec.choices else [self.train.model]


# ---------------------------------------------------------------- reading files


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


class SafeDumper(yaml.SafeDumper):
    """Quotes the strings _SafeLoader would read as something else (`'1e-4'`), so a config we
    write (config.yaml, the resume file) loads back the same."""


for _cls in (_SafeLoader, SafeDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise yaml.constructor.ConstructorError(None, None, f"{tag} is not supported", node.start_mark)


# Only what JSON has: a config is saved as JSON in the storage. Bytes, sets and pairs would fail
# there, after the study exists; a date stays the text it was written as (`2024-01-01`).
for _tag in ("binary", "set", "omap", "pairs"):
    _SafeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_SafeLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


MAX_CONFIG_BYTES = 4 * 2**20  # sweep configs are a few KB; more is a wrong file
MAX_YAML_NODES = 100_000  # values in a document, counting each use of an alias again


def parse_yaml(text: str, source: str) -> Any:
    """Safe YAML only: a python/object tag is an error, never executed. A document whose aliases
    expand past MAX_YAML_NODES values (a "billion laughs"), or refer to themselves, is refused:
    every later step (merging, validation, messages, saving) walks the expanded tree."""
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", source=source) from None
    except yaml.constructor.ConstructorError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise ConfigError(f"{where}unsafe or unknown YAML tag ({exc.problem})", source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}invalid YAML: {problem}", source=source) from None
    if _expanded_size(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise ConfigError(f"more than {MAX_YAML_NODES} values once aliases are expanded (an alias bomb, "
                          "or an alias inside itself)", source=source)
    return data


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with shared (aliased) parts counted at each use; stops
    counting past `limit`, so a bomb or a cycle costs at most `limit` steps."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def read_yaml_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError("no such config file", source=str(path))
    if path.is_dir():
        raise ConfigError("is a folder, not a config file", source=str(path))
    if not path.is_file():  # /dev/zero, a FIFO: reading would never end
        raise ConfigError("is not a regular file", source=str(path))
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // 2**20} MB: not a sweep config", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc.__class__.__name__}", source=str(path)) from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, not {type(data).__name__}", source=str(path))
    return data


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown preset '{name}' (known: {known})", key="preset")
    return path


def load_layer(path: Path, platform: str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One file with its `extends:` chain resolved and its foreign format translated."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError("'extends' forms a cycle", source=str(path), key="extends")
    raw = read_yaml_file(path)
    layer = to_native(raw, str(path))
    layer = apply_platform_overlay(layer, platform, str(path))
    parent = layer.pop("extends", None)
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
    base = load_layer(candidate, platform, (*_seen, path))
    base.pop("name", None)  # a study is named after the file that was run, not its parent
    return deep_merge(base, layer)


def apply_platform_overlay(layer: dict[str, Any], platform: str, source: str) -> dict[str, Any]:
    """`per_platform: {cpu: {...}, cuda: {...}}` applies the matching block on top of the file."""
    overlays = layer.pop("per_platform", None)
    if overlays is None:
        return layer
    if not isinstance(overlays, dict) or not set(overlays) <= {"cpu", "cuda", "mps"}:
        raise ConfigError("must map cpu/cuda/mps to config blocks", source=source, key="per_platform")
    block = overlays.get(platform) or {}
    if not isinstance(block, dict):
        raise ConfigError("must be a mapping", source=source, key=f"per_platform.{platform}")
    return deep_merge(layer, block)


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in `top` replaces what `base` had.

    `search_space` entries are replaced whole: a narrower range in a child file should not
    inherit `choices` or `log` from the parent's definition of the same parameter. An entry set
    to null removes the inherited parameter (it is then fixed at its `train:` value).
    """
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if key == "search_space" and isinstance(value, dict) and isinstance(merged.get(key), dict):
            space = {**merged[key], **copy.deepcopy(value)}
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
        from engine.formats import from_wandb

        return from_wandb(raw, source)
    if "optuna" in raw or "quick_validation" in raw:
        from engine.formats import from_optuna_guide

        return from_optuna_guide(raw, source)
    out = dict(raw)
    if isinstance(out.get("train"), dict):
        out["train"] = {canonical_param(k): v for k, v in out["train"].items()}
    if isinstance(out.get("search_space"), dict):
        out["search_space"] = {canonical_param(str(k)): v for k, v in out["search_space"].items()}
    return out


# ---------------------------------------------------------------- environment and flags


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TUI_HPO__TRAIN__LR=1e-4` -> {"train": {"lr": 1e-4}}; values are parsed as YAML scalars."""
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
    return layer


def flags_layer(n_trials: int | None = None, timeout: float | None = None, data: str | None = None,
                labels: str | None = None, parallel: int | None = None,
                trials_per_gpu: int | None = None) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if n_trials is not None:
        layer.setdefault("budget", {})["n_trials"] = n_trials
    if timeout is not None:
        layer.setdefault("budget", {})["timeout"] = timeout
    if data is not None:
        layer.setdefault("data", {})["path"] = data
    if labels is not None:
        layer.setdefault("data", {})["labels"] = labels
    if parallel is not None:
        layer.setdefault("resources", {})["parallel"] = parallel
    if trials_per_gpu is not None:
        layer.setdefault("resources", {})["trials_per_gpu"] = trials_per_gpu
    return layer


# ---------------------------------------------------------------- validation


def validate(merged: dict[str, Any], source: str | None) -> SweepConfig:
    """Merged layers -> a checked SweepConfig, or one ConfigError naming the key path."""
    try:
        config = SweepConfig.model_validate(merged)
    except ValidationError as exc:
        raise _one_line(exc, source) from None
    try:
        check(config)
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, key=exc.key) from None
    return config


def _one_line(exc: ValidationError, source: str | None) -> ConfigError:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        key = path.rpartition(".")[2]
        hint = f" (did you mean '{PARAM_ALIASES[key]}'?)" if key in PARAM_ALIASES else ""
        return ConfigError(f"unknown key '{key}'{hint}", source=source, key=path)
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict | list) else ""
    return ConfigError(f"{msg[0].lower()}{msg[1:]}{shown}", source=source, key=path)


STUDY_NAME_MAX_BYTES = 200  # a folder name (255 bytes at most), with room for `.engine-<name>.out`


def check_study_name(name: str, key: str) -> str:
    """`name`, if it can name a study; else a ConfigError for `key` (`--study`, `name`, ...).

    A study's files go to `DIR/<study>/`, so its name must be one plain folder name: no
    separator, no `.`/`..`, nothing absolute, no control characters (which also keep the TUI,
    the logs and every error on one line), valid UTF-8 for the storage. Every way a name comes
    in (`--study`, the config's `name:`, the config's file name, a study found in the storage)
    is checked here.
    """
    problem = None
    if not name.strip():
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is not a folder name"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif not name.isprintable():
        problem = "contains control or invisible characters, or bytes that are not UTF-8"
    elif len(name.encode("utf-8")) > STUDY_NAME_MAX_BYTES:
        problem = f"is longer than {STUDY_NAME_MAX_BYTES} bytes"
    if problem:
        shown = name if len(name) <= 60 else f"{name[:57]}..."
        raise ConfigError(f"study name {shown!r} {problem} (it names the study's folder, DIR/<study>/)", key=key)
    return name


def check(config: SweepConfig) -> None:
    """Rules across keys: names that must exist, and combinations that cannot work."""
    if config.name is not None:
        check_study_name(config.name, "name")
    metrics = [canonical_metric(m) for m in config.objective.metrics()]
    for metric in metrics:
        if metric not in METRIC_DIRECTIONS:
            raise ConfigError(f"unknown metric '{metric}' (use one of {', '.join(METRIC_DIRECTIONS)})",
                              key="objective.metric")
    config.objective.metric = metrics[0] if len(metrics) == 1 else metrics
    if len(config.objective.directions()) != len(metrics):
        raise ConfigError(f"{len(metrics)} metric(s) but {len(config.objective.directions())} direction(s)",
                          key="objective.direction")
    if config.sampler.name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{config.sampler.name}' (use one of {', '.join(SAMPLERS)})",
                          key="sampler.name")
    if config.pruner.name not in PRUNERS:
        raise ConfigError(f"unknown pruner '{config.pruner.name}' (use one of {', '.join(PRUNERS)})",
                          key="pruner.name")
    if len(metrics) > 1 and config.pruner.name != "none":
        raise ConfigError("pruning needs a single objective: set pruner.name: none", key="pruner.name")
    if config.pruner.name == "wilcoxon" and config.data.folds < 2:
        raise ConfigError("the wilcoxon pruner compares folds: set data.folds >= 2", key="pruner.name")
    if config.sampler.name == "cmaes" and len(metrics) > 1:
        raise ConfigError("CMA-ES is single-objective: use nsga2 or tpe", key="sampler.name")
    fixed = config.train.model_dump()
    check_space(config.search_space, TUNABLE, fixed)
    for name, spec in config.search_space.items():
        _check_domain(name, spec)
    if config.sampler.name == "grid":
        from engine.space import grid_values

        grid_values(config.search_space)


def _check_domain(name: str, spec: ParamSpec) -> None:
    """Whatever a trial samples must be a valid value of its training key (workers apply it
    unchecked): every choice, every bound (in the spec and in each `by` case), and whole numbers
    for a key that takes them (`accum_steps: {low: 1, high: 4.0}` would sample 2.7)."""
    path = f"search_space.{name}"
    for i, choice in enumerate(spec.choices or []):
        _check_value(name, choice, f"{path}.choices[{i}]")
    cases = [(path, spec.low, spec.high)]
    cases += [(f"{path}.by.{other}.{value}", o.low, o.high)
              for other, by_value in (spec.by or {}).items() for value, o in by_value.items()]
    for where, low, high in cases:
        for bound, value in (("low", low), ("high", high)):
            if value is not None:
                _check_value(name, value, f"{where}.{bound}")
    if TrainConfig.model_fields[name].annotation is int and spec.kind() == "float":
        raise ConfigError(f"'{name}' takes whole numbers: give whole bounds and step, or type: int", key=path)


def _check_value(name: str, value: Any, key: str) -> None:
    """A value a parameter can take (a choice, a bound) must be valid for its training key."""
    try:
        TrainConfig.model_validate({name: value})
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{msg[0].lower()}{msg[1:]} (got {value!r})", key=key) from None


def resolve(platform_layer: dict[str, Any], preset: str | None = None, config_file: str | None = None,
            environ: Mapping[str, str] | None = None, flags: dict[str, Any] | None = None,
            platform: str = "cpu") -> SweepConfig:
    """All layers merged and checked. The preset defaults to `quick` when no file is given."""
    layers: list[dict[str, Any]] = [platform_layer]
    source = None
    name = None
    if preset is not None or config_file is None:
        name = preset or "quick"
        layers.append(load_layer(preset_path(name), platform))
    if config_file is not None:
        path = Path(config_file)
        layers.append(load_layer(path, platform))
        source = str(path)
        name = path.stem
    layers.append(env_layer(environ if environ is not None else os.environ))
    layers.append(flags or {})
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    if not merged.get("name"):
        merged["name"] = name
    return validate(merged, source)
