"""Search space: parameter specs, their checks, and how a trial samples them.

A parameter is a training-config key (`lr`, `batch_size`, `model`, ...). Two kinds of condition
make a space conditional: `when` (the parameter exists only for some values of another, e.g.
`momentum` only with `optimizer: sgd`) and `by` (its range depends on another's value, e.g. a
learning-rate range per model, or a choice list per model: a per-model recipe).

Optuna keeps one choice list per parameter name in a study, so a categorical parameter's `by`
case samples under a name of its own, `batch_size[model=test_vit]` (the approach Optuna's docs
give for conditional spaces); the default case keeps the plain name. Those names are Optuna's
business: `train_params` folds them back into training keys wherever params are shown, exported
or trained again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ConfigError

# What users of other tools write, mapped to our training-config keys.
PARAM_ALIASES: dict[str, str] = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "label_smoothing_factor": "label_smoothing",
    "dropout_rate": "dropout",
    "drop_rate": "dropout",
    "drop_path_rate": "drop_path",
    "gradient_accumulation_steps": "accum_steps",
    "grad_accum": "accum_steps",
    "num_train_epochs": "epochs",
    "optim": "optimizer",
    "lr_scheduler_type": "scheduler",
    "img_size": "image_size",
    "model_name": "model",
    "arch": "model",
}

TYPE_ALIASES: dict[str, tuple[str, bool]] = {
    "float": ("float", False),
    "uniform": ("float", False),
    "loguniform": ("float", True),
    "log_uniform": ("float", True),
    "int": ("int", False),
    "int_uniform": ("int", False),
    "categorical": ("categorical", False),
    "choice": ("categorical", False),
}


def canonical_param(name: str) -> str:
    """The training-config key a user's parameter name stands for."""
    return PARAM_ALIASES.get(name, name)


class RangeOverride(BaseModel):
    """A replacement range for one value of the `by` parameter."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    choices: list[Any] | None = None  # categorical parameters only (check_space says so for a numeric one)


class ParamSpec(BaseModel):
    """One searchable parameter. `type` may be left out: it follows from low/high or choices."""

    # A nan bound passes every `low < high` check (all comparisons are false); inf is no range.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: str | None = None
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    when: dict[str, Any] | None = None
    by: dict[str, dict[str, RangeOverride]] | None = Field(default=None)

    def kind(self) -> Literal["float", "int", "categorical"]:
        if self.type is not None:
            return TYPE_ALIASES[self.type][0]  # type: ignore[return-value]
        if self.choices is not None:
            return "categorical"
        if _is_int(self.low) and _is_int(self.high) and (self.step is None or _is_int(self.step)):
            return "int"
        return "float"

    def is_log(self) -> bool:
        return self.log or (self.type is not None and TYPE_ALIASES[self.type][1])


def _is_int(value: float | None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_space(space: Mapping[str, ParamSpec], known: set[str], fixed: Mapping[str, Any]) -> None:
    """Cross-field checks pydantic cannot express; each error names its key path."""
    for name, spec in space.items():
        path = f"search_space.{name}"
        if name not in known:
            raise ConfigError(f"unknown parameter '{name}' (known: {', '.join(sorted(known))})", key=path)
        if spec.type is not None and spec.type not in TYPE_ALIASES:
            raise ConfigError(
                f"unknown type '{spec.type}' (use one of {', '.join(TYPE_ALIASES)})", key=f"{path}.type"
            )
        _check_range(path, spec.kind(), spec.is_log(), spec.low, spec.high, spec.step, spec.choices)
        for other, _value in (spec.when or {}).items():
            other = canonical_param(other)
            if other == name:
                raise ConfigError("a parameter cannot depend on itself", key=f"{path}.when")
            if other not in space and other not in fixed:
                raise ConfigError(f"refers to unknown parameter '{other}'", key=f"{path}.when")
        for other, cases in (spec.by or {}).items():
            other = canonical_param(other)
            if other == name:
                raise ConfigError("a parameter cannot depend on itself", key=f"{path}.by")
            if other not in space:
                raise ConfigError(f"refers to '{other}', which is not in the search space", key=f"{path}.by")
            for value, override in cases.items():
                case = f"{path}.by.{other}.{value}"
                _check_case(case, spec.kind(), override)
                merged = {**spec.model_dump(include={"low", "high", "step", "choices"}),
                          **override.model_dump(exclude_none=True)}
                _check_range(case, spec.kind(), spec.is_log(), **merged)
    sample_order(space)  # raises on a cycle of conditions


def _check_case(path: str, kind: str, override: RangeOverride) -> None:
    """A `by` case replaces what its parameter's kind has: the choice list of a categorical, the
    bounds and step of a numeric one. Mixed up, the case would be silently half ignored."""
    if kind == "categorical":
        given = [k for k in ("low", "high", "step") if getattr(override, k) is not None]
        if given:
            raise ConfigError(f"a case of a categorical parameter takes 'choices', not {'/'.join(given)}", key=path)
    elif override.choices is not None:
        raise ConfigError(f"a case of a {kind} parameter takes low/high/step, not 'choices' (give the parameter "
                          "itself choices to make it categorical)", key=f"{path}.choices")


def _check_range(path: str, kind: str, log: bool, low: float | None, high: float | None,
                 step: float | None, choices: list[Any] | None) -> None:
    if kind == "categorical":
        if choices is None:
            raise ConfigError("needs 'choices'", key=path)
        if not choices:
            raise ConfigError("is empty: give at least one choice", key=f"{path}.choices")
        return
    if choices is not None:
        raise ConfigError(f"'choices' given for a {kind} parameter: remove low/high or the type", key=path)
    if low is None or high is None:
        raise ConfigError("needs both 'low' and 'high' (or 'choices')", key=path)
    if low >= high:
        raise ConfigError(f"must be < high ({low:g} >= {high:g})", key=f"{path}.low")
    if log and low <= 0:
        raise ConfigError(f"must be > 0 for a log range (got {low:g})", key=f"{path}.low")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"must be > 0 (got {step:g})", key=f"{path}.step")
        if log:
            raise ConfigError("cannot be combined with a log range", key=f"{path}.step")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"an int parameter needs whole bounds (got {low:g}..{high:g})", key=path)
    if kind == "int" and step is not None and not float(step).is_integer():  # suggest_int would get int(0.5) == 0
        raise ConfigError(f"an int parameter needs a whole step (got {step:g})", key=f"{path}.step")


def _dependencies(spec: ParamSpec) -> set[str]:
    return {canonical_param(k) for k in (spec.when or {})} | {canonical_param(k) for k in (spec.by or {})}


def sample_order(space: Mapping[str, ParamSpec]) -> list[str]:
    """Parameters ordered so each comes after those its `when`/`by` depend on."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ConfigError(f"conditions form a cycle: {' -> '.join([*trail, name])}",
                              key=f"search_space.{name}")
        state[name] = 1
        for dep in sorted(_dependencies(space[name])):
            if dep in space:
                visit(dep, (*trail, name))
        state[name] = 2
        order.append(name)

    for name in space:
        visit(name, ())
    return order


def matches(expected: Any, actual: Any) -> bool:
    options = expected if isinstance(expected, list) else [expected]
    return any(str(option) == str(actual) for option in options)


@dataclass(frozen=True)
class Domain:
    """What one parameter samples from in one trial, once its `when` and `by` are applied."""

    name: str  # the Optuna parameter name: the training key, or `key[other=value]` (see case_name)
    kind: str
    log: bool
    low: float | None
    high: float | None
    step: float | None
    choices: list[Any] | None


def case_name(name: str, other: str, value: str) -> str:
    """The Optuna name of `name`'s choice list for `other == value`: a name of its own, since
    Optuna refuses a second choice list under one name in a study. `train_key` undoes it."""
    return f"{name}[{other}={value}]"


def train_key(optuna_name: str) -> str:
    """The training key an Optuna parameter name stands for: `batch_size[model=test_vit]` -> `batch_size`."""
    return optuna_name.split("[", 1)[0]


def train_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's params (or anything keyed by Optuna parameter names: distributions, importance
    scores) keyed by training key, as users read, export and train them. A trial samples each key
    under one name only, so no two names fold onto one key."""
    return {train_key(name): value for name, value in params.items()}


def domain(name: str, spec: ParamSpec, context: Mapping[str, Any]) -> Domain | None:
    """`name`'s domain given the values already known (fixed and sampled, by training key); None
    when its `when` does not hold. `suggest` and `grid_points` both read this, so the grid holds
    exactly the combinations trials sample. Later `by` entries win over earlier ones."""
    if spec.when and not all(matches(v, context.get(canonical_param(k))) for k, v in spec.when.items()):
        return None
    optuna_name, low, high, step, choices = name, spec.low, spec.high, spec.step, spec.choices
    for other, cases in (spec.by or {}).items():
        value = str(context.get(canonical_param(other)))
        override = cases.get(value)
        if override is None:
            continue
        low = override.low if override.low is not None else low
        high = override.high if override.high is not None else high
        step = override.step if override.step is not None else step
        if override.choices is not None:
            optuna_name, choices = case_name(name, canonical_param(other), value), override.choices
    return Domain(optuna_name, spec.kind(), spec.is_log(), low, high, step, choices)


def suggest(trial: Any, space: Mapping[str, ParamSpec], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Sample every active parameter of `space` on an Optuna trial (or anything with suggest_*).
    Returns values by training key, whatever Optuna name a value was sampled under."""
    values: dict[str, Any] = {}
    for name in sample_order(space):
        found = domain(name, space[name], {**fixed, **values})
        if found is None:
            continue
        if found.kind == "categorical":
            values[name] = trial.suggest_categorical(found.name, found.choices)
        elif found.kind == "int":
            values[name] = trial.suggest_int(found.name, int(found.low), int(found.high), step=int(found.step or 1),
                                             log=found.log)
        else:
            values[name] = trial.suggest_float(found.name, float(found.low), float(found.high), step=found.step,
                                               log=found.log)
    return values


MAX_GRID_POINTS = 100_000  # every point is a training run: past this, a grid is a mistake, and its list a memory hog


def default_point(space: Mapping[str, ParamSpec], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed (`train:`) values as a point of the space, by Optuna name: each parameter whose
    fixed value its domain holds; one whose value it does not hold is left for the sampler."""
    point: dict[str, Any] = {}
    context = dict(fixed)
    for name in sample_order(space):
        found = domain(name, space[name], context)
        value = fixed.get(name)
        if found is None or value is None:
            continue
        if found.kind == "categorical":
            inside = any(matches(choice, value) for choice in found.choices or [])
        else:
            inside = isinstance(value, int | float) and not isinstance(value, bool) and \
                float(found.low) <= value <= float(found.high) and \
                (found.step is None or float((value - found.low) / found.step).is_integer())
        if inside:
            point[found.name] = value
        else:
            context[name] = None  # what depends on it is the sampler's to choose
    return point


def grid_points(space: Mapping[str, ParamSpec], fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination a trial can sample, for the grid sampler, each keyed by Optuna
    parameter name. A walk in `sample_order` applying `when` and `by` as `suggest` does: a
    parameter inactive for some values adds no points there (a plain cartesian product would
    repeat those runs), and a `by` case contributes its own list."""
    order = sample_order(space)
    points: list[dict[str, Any]] = []

    def walk(index: int, values: dict[str, Any], point: dict[str, Any]) -> None:
        if index == len(order):
            if len(points) == MAX_GRID_POINTS:
                raise ConfigError(f"the grid has more than {MAX_GRID_POINTS} points: give fewer choices or larger "
                                  "steps", key="search_space")
            points.append(point)
            return
        name = order[index]
        found = domain(name, space[name], {**fixed, **values})
        if found is None:
            walk(index + 1, values, point)
            return
        for value in _grid_values(found, f"search_space.{name}"):
            walk(index + 1, {**values, name: value}, {**point, found.name: value})

    walk(0, {}, {})
    return points


def _grid_values(found: Domain, path: str) -> list[Any]:
    """The finite value list of one parameter's domain."""
    if found.kind == "categorical":
        return list(found.choices or [])
    if found.step is None and found.kind != "int":
        raise ConfigError("the grid sampler needs 'choices' or a 'step' for every parameter", key=path)
    step = found.step or 1
    count = round((found.high - found.low) / step) + 1
    if count > 1000:
        raise ConfigError(f"{count} grid points: give 'choices' or a larger step", key=path)
    cast = int if found.kind == "int" else float
    return [cast(found.low + i * step) for i in range(count)]
