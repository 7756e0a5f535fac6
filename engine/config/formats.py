"""The two foreign sweep layouts users already have, mapped onto our native dict.

- W&B sweep files (`method`, `metric`, `parameters`, `early_terminate`).
- The original Optuna guide (`optuna:` with n_trials/timeout/pruning, `search_space:` with
  optional `advanced_params:`, `quick_validation:`).

Native sections (`data`, `train`, `resources`, ...) may stand beside either and are kept.
"""

from __future__ import annotations

import math
from typing import Any

from engine.config.names import slug
from engine.config.space import canonical_param
from engine.errors import ConfigError

NATIVE_KEYS = {"name", "description", "extends", "data", "train", "resources", "objective", "sampler",
               "pruner", "budget", "search_space", "per_platform", "when_finetuning", "integrations", "checkpoints",
               "notify"}

WANDB_METHODS = {"grid": "grid", "random": "random", "bayes": "tpe"}
WANDB_KEYS = {"program", "command", "project", "entity", "description", "name", "controller"}
# W&B's own keys with no meaning here: read, and named in a note rather than refused
WANDB_ONLY = ("project", "entity", "controller")
NOTES = "_notes"  # a translated layer's notes for the user, taken off before validation (`layers.resolve`)
SIGMAS = 3  # a normal distribution is searched within mean +- 3 standard deviations (99.7% of its mass)


def _mapping(value: Any, source: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"must be a mapping, not {type(value).__name__}", source=source, key=key)
    return value


def _number(value: Any, source: str, key: str) -> float:
    """A value the translation computes with (mu, sigma, eta, s, max_iter) must be a number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"must be a number (got {value!r})", source=source, key=key)
    return value


def display_name(name: Any, description: Any) -> dict[str, Any]:
    """A W&B `name` (or the guide's `study_name`) is free text ("ResNet sweep 2/3: lr + wd"): it
    becomes the study's description, and a slug of it the study's name (`ResNet-sweep-2-3-lr-wd`).
    A name with nothing to slug leaves the study to be named after the file."""
    if name is None:
        return {}
    text = str(name)
    out: dict[str, Any] = {"description": description if description is not None else text}
    if slug(text):
        out["name"] = slug(text)
    return out


def from_wandb(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A W&B sweep file as our layer. A parameter tui-hpo's trainer does not have is refused here,
    by its W&B key path (`parameters.fc_layer_size`), once everything else has been read."""
    out, foreign = translate_wandb(raw, source)
    if foreign:
        key, name = foreign[0]
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ConfigError(f"'{name}' is not a parameter of tui-hpo's trainer{more}: the file names no program, "
                          "so the trainer runs (add `program:` to run yours, or use lr, batch_size, epochs, model, "
                          "...)",
                          source=source, key=key)
    return out


def translate_wandb(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(the layer, the (key path, name) of each parameter the trainer does not have)."""
    from engine.config.schema import TrainConfig

    out: dict[str, Any] = {k: v for k, v in raw.items() if k in NATIVE_KEYS - {"search_space", "name"}}
    for key in raw:
        if key not in NATIVE_KEYS | WANDB_KEYS | {"method", "metric", "parameters", "early_terminate",
                                                    "run_cap"}:
            raise ConfigError(f"unknown key '{key}' in a W&B sweep file", source=source, key=key)
    method = raw["method"]
    if not isinstance(method, str) or method not in WANDB_METHODS:
        raise ConfigError(f"unknown method {method!r} (use grid, random or bayes)", source=source, key="method")
    out.setdefault("sampler", {})["name"] = WANDB_METHODS[method]
    out.update(display_name(raw.get("name"), raw.get("description")))
    notes = [f"W&B's {key} ({raw[key]!r}) is not used here" for key in WANDB_ONLY if key in raw]
    runs_program = "program" in raw or "command" in raw
    if runs_program:  # each trial runs the program, as `wandb agent` would: its parameters are its own
        out.setdefault("objective", {}).update(command=_wandb_command(raw, source), flags=False)
    if "run_cap" in raw:
        out.setdefault("budget", {})["n_trials"] = raw["run_cap"]
    if "metric" in raw:
        metric = _mapping(raw["metric"], source, "metric")
        unknown = set(metric) - {"name", "goal", "target"}
        if unknown:
            raise ConfigError(f"unknown key '{sorted(unknown, key=str)[0]}'", source=source, key="metric")
        if "name" not in metric:
            raise ConfigError("needs 'name'", source=source, key="metric")
        objective = out.setdefault("objective", {})
        objective["metric"] = metric["name"]
        if "target" in metric:
            notes.append(f"metric.target ({metric['target']!r}) does not stop the sweep here: n_trials and "
                         "budget.timeout do")
        if "goal" in metric:
            if metric["goal"] not in ("maximize", "minimize"):
                raise ConfigError(f"must be maximize or minimize (got {metric['goal']!r})",
                                  source=source, key="metric.goal")
            objective["direction"] = metric["goal"]
        elif runs_program:
            objective["direction"] = "minimize"
            notes.append(f"metric.goal is not given: W&B minimizes '{metric['name']}', and so does this sweep")
    train = dict(_mapping(out.get("train") or {}, source, "train"))
    space: dict[str, Any] = {}
    seen: dict[str, str] = {}  # parameter -> the key path it came from (nested groups may clash)
    foreign: list[tuple[str, str]] = []
    for key, name, spec in _wandb_leaves(_mapping(raw["parameters"], source, "parameters"), "parameters", source):
        # A program gets nested groups as W&B gives them (`--optimizer.lr=0.1`); the trainer, by its names
        target = key.removeprefix("parameters.").replace(".parameters.", ".") if runs_program else canonical_param(name)
        if target in seen:
            raise ConfigError(f"sets '{target}' again ({seen[target]} set it first)", source=source, key=key)
        seen[target] = key
        if target not in TrainConfig.model_fields and not runs_program:
            foreign.append((key, name))
        if "value" in spec:
            train[target] = spec["value"]
        else:
            space[target] = _wandb_param(spec, source, key)
            if "probabilities" in spec:
                notes.append(f"{key}.probabilities: the samplers here pick each value alike")
    if train:
        out["train"] = train
    out["search_space"] = space
    if "early_terminate" in raw:
        out["pruner"] = _wandb_hyperband(_mapping(raw["early_terminate"], source, "early_terminate"), source)
    elif "pruner" not in out:
        out["pruner"] = {"name": "none"}
    if notes:
        out[NOTES] = notes
    return out, foreign


WANDB_DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


def _wandb_command(raw: dict[str, Any], source: str) -> list[str]:
    """The command `wandb agent` would run: `command:` or W&B's default, `${program}` filled in
    (the other macros are expanded per trial, engine.command.argv)."""
    program = raw.get("program")
    if program is not None and (not isinstance(program, str) or not program):
        raise ConfigError(f"must be the program's path (got {program!r})", source=source, key="program")
    command = raw.get("command", WANDB_DEFAULT_COMMAND)
    if isinstance(command, str):
        command = [command]
    if not isinstance(command, list) or not command:
        raise ConfigError("must be a list of arguments", source=source, key="command")
    if program is not None and not program.endswith(".py") and "command" not in raw:
        command = [t for t in command if t != "${interpreter}"]  # W&B runs a program that is not Python itself
    out = []
    for i, token in enumerate(command):
        if not isinstance(token, str | int | float) or isinstance(token, bool):
            raise ConfigError(f"must be text (got {token!r})", source=source, key=f"command[{i}]")
        token = str(token)
        if "${program}" in token:
            if program is None:
                raise ConfigError("uses ${program}, but the file names no program", source=source,
                                  key=f"command[{i}]")
            token = token.replace("${program}", program)
        out.append(token)
    return out


def _wandb_leaves(params: dict[str, Any], prefix: str, source: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(key path, name, spec) of each parameter, nested groups (`optimizer: {parameters: {lr:
    ...}}`, which W&B hands the program as a dict) flattened to their leaves' names."""
    leaves = []
    for name, spec in params.items():
        key = f"{prefix}.{name}"
        spec = _mapping(spec, source, key)
        if "parameters" in spec:
            if set(spec) != {"parameters"}:
                raise ConfigError("a group of parameters holds only 'parameters'", source=source, key=key)
            leaves += _wandb_leaves(_mapping(spec["parameters"], source, f"{key}.parameters"), f"{key}.parameters",
                                    source)
        else:
            leaves.append((key, str(name), spec))
    return leaves


def _wandb_param(spec: dict[str, Any], source: str, key: str) -> dict[str, Any]:
    allowed = {"values", "distribution", "min", "max", "q", "mu", "sigma", "probabilities"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"unknown key '{sorted(unknown, key=str)[0]}'", source=source, key=key)
    dist = spec.get("distribution", "categorical" if "values" in spec else None)
    if dist is not None and not isinstance(dist, str):
        raise ConfigError(f"must be a distribution name (got {dist!r})", source=source, key=f"{key}.distribution")
    if dist is None:
        dist = "int_uniform" if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int) \
            else "uniform"
    if dist == "categorical" or (dist is not None and "values" in spec):
        if "values" not in spec:
            raise ConfigError("a categorical parameter needs 'values'", source=source, key=key)
        return {"type": "categorical", "choices": spec["values"]}
    q = spec.get("q")
    if dist in NORMALS:
        # Bounded search needs a range: mean +- 3 standard deviations (of the log, for log_normal).
        mu = _number(spec.get("mu", 0.0), source, f"{key}.mu")
        sigma = _number(spec.get("sigma", 1.0), source, f"{key}.sigma")
        low, high = spec.get("min", mu - SIGMAS * sigma), spec.get("max", mu + SIGMAS * sigma)
        if "log" in dist:  # W&B: exp(X), X ~ N(mu, sigma)
            return {"type": "float", "log": True, "low": _exp(low, source, key), "high": _exp(high, source, key)}
        return {"type": "float", "low": low, "high": high, **({"step": q} if dist == "q_normal" and q else {})}
    if "min" not in spec or "max" not in spec:
        raise ConfigError(f"distribution '{dist}' needs 'min' and 'max'", source=source, key=key)
    low, high = spec["min"], spec["max"]
    if dist in EXPONENTS:  # W&B: min and max bound the natural log of the value (of 1/value for inv_)
        lo, hi = _number(low, source, f"{key}.min"), _number(high, source, f"{key}.max")
        low, high = (_exp(-hi, source, key), _exp(-lo, source, key)) if dist.startswith("inv") else \
            (_exp(lo, source, key), _exp(hi, source, key))
    table: dict[str, dict[str, Any]] = {
        "uniform": {"type": "float"},
        "log_uniform_values": {"type": "float", "log": True},
        "log_uniform": {"type": "float", "log": True},
        "int_uniform": {"type": "int"},
        "q_uniform": {"type": "float", "step": q if q is not None else 1.0},
        # Optuna has no log scale with a step for floats: q is kept only as whole numbers (q: 1)
        "q_log_uniform_values": {"type": "int" if isinstance(q, int) and q == 1 else "float", "log": True},
        "q_log_uniform": {"type": "int" if isinstance(q, int) and q == 1 else "float", "log": True},
        "inv_log_uniform_values": {"type": "float", "log": True},
        "inv_log_uniform": {"type": "float", "log": True},
    }
    if dist not in table:
        raise ConfigError(f"unknown distribution '{dist}' (use one of {', '.join([*table, 'categorical', *NORMALS])})",
                          source=source, key=f"{key}.distribution")
    if table[dist].get("type") == "int" and dist in EXPONENTS:
        low, high = math.ceil(low - 1e-9), math.floor(high + 1e-9)
    return {**table[dist], "low": low, "high": high}


NORMALS = ("normal", "q_normal", "log_normal", "q_log_normal")
EXPONENTS = ("log_uniform", "q_log_uniform", "inv_log_uniform")


def _exp(value: Any, source: str, key: str) -> float:
    """e**value, for W&B's distributions bounded by natural logs; one line when it is no number."""
    try:
        return math.exp(_number(value, source, key))
    except OverflowError:
        raise ConfigError(f"e**{value!r} is too large: W&B's log distributions take natural logs as bounds "
                          "(use log_uniform_values for the values themselves)", source=source, key=key) from None


def _wandb_hyperband(spec: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = set(spec) - {"type", "min_iter", "max_iter", "eta", "s", "strict"}
    if unknown:
        raise ConfigError(f"unknown key '{sorted(unknown, key=str)[0]}'", source=source, key="early_terminate")
    if spec.get("type") != "hyperband":
        raise ConfigError(f"only type hyperband is supported (got {spec.get('type')!r})",
                          source=source, key="early_terminate.type")
    options: dict[str, Any] = {"reduction_factor": spec.get("eta", 3)}
    if "min_iter" in spec:
        options["min_resource"] = spec["min_iter"]
    if "max_iter" in spec:
        options["max_resource"] = spec["max_iter"]
    if "s" in spec and "min_iter" not in spec and "max_iter" in spec:
        # W&B derives the first bracket from max_iter / eta**s.
        max_iter = _number(spec["max_iter"], source, "early_terminate.max_iter")
        eta = _number(spec.get("eta", 3), source, "early_terminate.eta")
        brackets = _number(spec["s"], source, "early_terminate.s")
        if eta <= 1 or brackets < 0:
            raise ConfigError(f"needs eta > 1 and s >= 0 (got eta {eta!r}, s {brackets!r})", source=source,
                              key="early_terminate")
        try:
            options["min_resource"] = max(1, int(max_iter / eta**brackets))
        except (ArithmeticError, ValueError):  # inf or nan epochs, an overflowing power
            raise ConfigError(f"max_iter / eta**s is no number of epochs ({max_iter!r} / {eta!r}**{brackets!r})",
                              source=source, key="early_terminate") from None
    return {"name": "hyperband", "options": options}


GUIDE_OPTUNA_KEYS = {"n_trials", "timeout", "pruning", "sampler", "direction", "metric", "study_name",
                     "quick_validation", "seed"}


def from_optuna_guide(raw: dict[str, Any], source: str) -> dict[str, Any]:
    for key in raw:
        if key not in NATIVE_KEYS | {"optuna", "quick_validation"}:
            raise ConfigError(f"unknown key '{key}'", source=source, key=key)
    out: dict[str, Any] = {k: v for k, v in raw.items() if k in NATIVE_KEYS - {"search_space"}}
    section = _mapping(raw.get("optuna") or {}, source, "optuna")
    for key in section:
        if key not in GUIDE_OPTUNA_KEYS:
            raise ConfigError(f"unknown key '{key}'", source=source, key=f"optuna.{key}")
    budget = out.setdefault("budget", {})
    for key in ("n_trials", "timeout"):
        if key in section:
            budget[key] = section[key]
    if "study_name" in section:
        out.update(display_name(section["study_name"], out.get("description")))
    if "metric" in section:
        out.setdefault("objective", {})["metric"] = section["metric"]
    if "direction" in section:
        out.setdefault("objective", {})["direction"] = section["direction"]
    if "sampler" in section:
        out.setdefault("sampler", {})["name"] = str(section["sampler"]).lower().removesuffix("sampler")
    if "seed" in section:
        out.setdefault("sampler", {})["seed"] = section["seed"]
    if "pruning" in section:
        pruning = _mapping(section["pruning"], source, "optuna.pruning")
        unknown = set(pruning) - {"enabled", "patience", "pruner"}
        if unknown:
            raise ConfigError(f"unknown key '{sorted(unknown, key=str)[0]}'", source=source, key="optuna.pruning")
        if pruning.get("enabled", True):
            pruner: dict[str, Any] = {"name": pruning.get("pruner", "median")}
            if "patience" in pruning:
                pruner["patience"] = pruning["patience"]
        else:
            pruner = {"name": "none"}
        out["pruner"] = pruner
    quick = raw.get("quick_validation", section.get("quick_validation"))
    train = dict(_mapping(out.get("train") or {}, source, "train"))
    cap = None
    if quick is not None:
        quick = _mapping(quick, source, "quick_validation")
        for key in quick:
            if key not in ("epochs", "folds", "batch_size_override"):
                raise ConfigError(f"unknown key '{key}'", source=source, key=f"quick_validation.{key}")
        if "epochs" in quick:
            train["epochs"] = quick["epochs"]
        if "folds" in quick:
            out.setdefault("data", {})["folds"] = quick["folds"]
        cap = quick.get("batch_size_override")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ConfigError(f"must be a whole number >= 1 (got {cap!r})", source=source,
                              key="quick_validation.batch_size_override")
    space: dict[str, Any] = {}
    for name, spec in _mapping(raw.get("search_space") or {}, source, "search_space").items():
        if name == "advanced_params":
            for sub, sub_spec in _mapping(spec, source, "search_space.advanced_params").items():
                space[canonical_param(str(sub))] = sub_spec
        else:
            space[canonical_param(str(name))] = spec
    if cap is not None and isinstance(space.get("batch_size"), dict):
        choices = space["batch_size"].get("choices")
        if isinstance(choices, list):
            # Only numbers are capped; anything else is left for validation to name.
            kept = [c for c in choices if not isinstance(c, int | float) or isinstance(c, bool) or c <= cap]
            space["batch_size"] = {**space["batch_size"], "choices": kept or [cap]}
    if train:
        out["train"] = {canonical_param(k): v for k, v in train.items()}
    out["search_space"] = space
    return out
