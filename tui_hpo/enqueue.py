"""A trial the user enqueues: the form's fields, what each may hold, and the typed values checked
against the study's space and keyed by Optuna's parameter names (what `Study.enqueue_trial` takes).

A tui-hpo sweep's space is its config's `search_space`, walked as a trial samples it
(`engine.config.space.domain`), so a value typed for `model` decides the range (and Optuna name)
of a parameter with a per-model case. A plain Optuna study has no config: its space is the
selected trial's own distributions. A field left empty is the sampler's to choose, as Optuna
does with a partly fixed enqueued trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from engine.config.space import Domain, ParamSpec, canonical_param, domain, sample_order
from tui_hpo.format import number


@dataclass(frozen=True)
class Field:
    """One input of the form."""

    name: str  # the training key (a sweep's) or the Optuna name (a plain study's)
    hint: str  # what it may hold: `0.0003 .. 0.01 log`, `64 | 128`
    value: str  # prefilled: the selected trial's value, "" where it has none


def hint(found: Domain) -> str:
    if found.kind == "categorical":
        return " | ".join(str(c) for c in found.choices or [])
    text = f"{number(found.low)} .. {number(found.high)}"
    if found.step is not None and not (found.kind == "int" and found.step == 1):
        text += f" step {number(found.step)}"
    return text + (" log" if found.log else "") + (" (int)" if found.kind == "int" else "")


def parse(found: Domain, label: str, text: str) -> Any:
    """`text` as a value of `found`, or ValueError with one line naming `label` and the space.
    A categorical value is returned as the choice itself (64, not "64"): Optuna finds a fixed
    categorical value by equality among its choices."""
    if found.kind == "categorical":
        try:
            typed = yaml.safe_load(text)  # `true` for True, `64` for 64
        except yaml.YAMLError:
            typed = text
        for choice in found.choices or []:
            if str(choice) == text or (choice == typed and type(choice) is type(typed)):
                return choice
        raise ValueError(f"{label}: {text!r} is not one of {hint(found)}")
    try:
        value = float(text)  # `1e-3` too, which YAML would read as a string
    except ValueError:
        raise ValueError(f"{label}: {text!r} is not a number (the space: {hint(found)})") from None
    if not math.isfinite(value):
        raise ValueError(f"{label}: {text!r} is not a number (the space: {hint(found)})")
    if found.kind == "int" and not value.is_integer():
        raise ValueError(f"{label}: {text} is not a whole number (the space: {hint(found)})")
    typed = int(value) if found.kind == "int" else value
    low, high = float(found.low or 0), float(found.high or 0)
    off_grid = found.step is not None and not math.isclose(
        (typed - low) / found.step, round((typed - low) / found.step), abs_tol=1e-8)
    if not low <= typed <= high or off_grid:
        raise ValueError(f"{label}: {text} is outside the space ({hint(found)})")
    return typed


class ConfigSpace:
    """A tui-hpo sweep's search space, prefilled from a trial's params (by training key)."""

    def __init__(self, space: Mapping[str, ParamSpec], fixed: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        self.space, self.fixed = space, fixed
        self.order = sample_order(space)
        context = {**fixed, **params}
        self.fields = [Field(name, hint(found) if (found := domain(name, space[name], context)) else "not searched "
                             "with these values", "" if params.get(name) is None else str(params[name]))
                       for name in self.order]

    def check(self, typed: Mapping[str, str]) -> dict[str, Any]:
        """The typed values by Optuna name; ValueError with one line for the first bad one."""
        values: dict[str, Any] = {}  # by training key: what later parameters' conditions read
        point: dict[str, Any] = {}
        for name in self.order:
            spec, text = self.space[name], typed.get(name, "").strip()
            found = domain(name, spec, {**self.fixed, **values})
            if not text:
                continue
            left = [other for other in (*(spec.when or {}), *(spec.by or {}))
                    if canonical_param(other) in self.space and canonical_param(other) not in values]
            if left:
                other = canonical_param(left[0])
                raise ValueError(f"{name}: depends on {other}: give {other} too, or leave {name} empty")
            if found is None:
                raise ValueError(f"{name}: not searched with these values ({_when(spec)}): leave it empty")
            values[name] = point[found.name] = parse(found, name, text)
        if not point:
            raise ValueError("give at least one value (an empty field is the sampler's to choose)")
        return point


class TrialSpace:
    """A plain Optuna study's space: the distributions a trial sampled, by Optuna name."""

    def __init__(self, domains: list[Domain], params: Mapping[str, Any]) -> None:
        self.domains = {d.name: d for d in domains}
        self.fields = [Field(d.name, hint(d), str(params[d.name]) if d.name in params else "") for d in domains]

    def check(self, typed: Mapping[str, str]) -> dict[str, Any]:
        point = {name: parse(found, name, typed[name].strip()) for name, found in self.domains.items()
                 if typed.get(name, "").strip()}
        if not point:
            raise ValueError("give at least one value (an empty field is the sampler's to choose)")
        return point


def domains_of(distributions: Mapping[str, Any]) -> list[Domain]:
    """Optuna distributions as the Domains `parse` checks against."""
    out = []
    for name, dist in distributions.items():
        choices = getattr(dist, "choices", None)
        if choices is not None:
            out.append(Domain(name, "categorical", False, None, None, None, list(choices)))
        else:
            kind = "int" if type(dist).__name__ == "IntDistribution" else "float"
            step = dist.step if kind == "float" or dist.step != 1 else None
            out.append(Domain(name, kind, bool(dist.log), dist.low, dist.high, step, None))
    return out


def _when(spec: ParamSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in (spec.when or {}).items()) or "its condition"
