"""What to run next: the search space narrowed to where the best trials fell.

The original team's workflow was screening (a wide sweep), focused search (the ranges the top
10-20% of trials used), then fine-tuning (unimportant parameters fixed at their best value). This
module turns a finished or running study into the focused sweep: a complete YAML that `tui-hpo run
--config` accepts, plus a plain account of each parameter's old and new range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from engine.config import SweepConfig
from engine.config.space import ParamSpec, RangeOverride, canonical_param, case_name, matches, train_params
from engine.errors import UserError

States = optuna.trial.TrialState
PAD = 0.1  # widen a narrowed range by this share of its span, so the best value is not on an edge
MIN_TOP = 3  # fewer top trials than this say little about a range


@dataclass(frozen=True)
class Change:
    """One parameter's old and new range, for the table and the JSON."""

    name: str
    before: str
    after: str
    best: Any
    note: str = ""


@dataclass(frozen=True)
class Recommendation:
    study: str
    metric: str
    completed: int
    top: int
    best: dict[str, Any]
    best_value: float
    config: dict[str, Any]  # the focused sweep, complete
    changes: list[Change]
    notes: list[str]


def ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best first by the first objective."""
    complete = study.get_trials(deepcopy=False, states=(States.COMPLETE,))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.values[0], reverse=maximize)


def describe(spec: ParamSpec) -> str:
    if spec.kind() == "categorical":
        cases = [f"{other}={value}: {', '.join(map(str, case.choices))}" for other, by_value in (spec.by or {}).items()
                 for value, case in by_value.items() if case.choices is not None]
        return "; ".join([", ".join(map(str, spec.choices or [])), *cases])
    scale = " log" if spec.is_log() else ""
    step = f" step {spec.step:g}" if spec.step else ""
    return f"[{spec.low:g}, {spec.high:g}]{scale}{step}"


def _bounds(spec: ParamSpec) -> tuple[float, float]:
    """The widest bounds the spec allows, across its `by` cases."""
    lows = [spec.low] + [c.low for cases in (spec.by or {}).values() for c in cases.values() if c.low is not None]
    highs = [spec.high] + [c.high for cases in (spec.by or {}).values() for c in cases.values() if c.high is not None]
    return float(min(v for v in lows if v is not None)), float(max(v for v in highs if v is not None))


def narrow_numeric(spec: ParamSpec, values: list[float]) -> tuple[float, float]:
    """The range the values span, padded, kept inside the original bounds and on its step."""
    low, high = _bounds(spec)
    lo, hi = min(values), max(values)
    if spec.is_log():
        span = math.log(hi / lo) if hi > lo else math.log(1.5)
        lo, hi = lo * math.exp(-PAD * span), hi * math.exp(PAD * span)
    else:
        span = (hi - lo) or 0.5 * PAD * (high - low)
        lo, hi = lo - PAD * span, hi + PAD * span
    lo, hi = max(lo, low), min(hi, high)
    if spec.kind() == "int" or spec.step:
        step = float(spec.step or 1)
        lo = low + math.floor((lo - low) / step + 1e-9) * step
        hi = low + math.ceil((hi - low) / step - 1e-9) * step
    if spec.kind() == "int":
        return int(lo), int(hi)
    return float(f"{lo:.4g}"), float(f"{hi:.4g}")


def _narrowed(spec: ParamSpec, values: list[Any]) -> ParamSpec | Any:
    """A narrower spec, or the single value the top trials agree on."""
    if spec.kind() == "categorical":
        chosen = [c for c in spec.choices or [] if any(str(c) == str(v) for v in values)]
        if len(chosen) == 1:
            return chosen[0]
        return spec.model_copy(update={"choices": chosen, "by": None})
    lo, hi = narrow_numeric(spec, values)
    if lo >= hi:
        return lo
    return spec.model_copy(update={"low": lo, "high": hi, "by": None})


def _narrowed_cases(name: str, spec: ParamSpec, top: list[optuna.trial.FrozenTrial]) -> ParamSpec:
    """A categorical parameter with a choice list per value of another (`by`): each list narrowed
    to what the top trials of its own case took (the Optuna names tell the cases apart), so a
    per-model recipe stays per model. A list that no top trial used is kept whole."""

    def narrowed(choices: list[Any], optuna_name: str) -> list[Any]:
        taken = {str(t.params[optuna_name]) for t in top if optuna_name in t.params}
        return [c for c in choices if str(c) in taken] or list(choices)

    def case(other: str, value: str, override: RangeOverride) -> RangeOverride:
        if override.choices is None:
            return override
        return override.model_copy(update={"choices": narrowed(override.choices,
                                                               case_name(name, canonical_param(other), value))})

    by = {other: {value: case(other, value, o) for value, o in by_value.items()}
          for other, by_value in (spec.by or {}).items()}
    return spec.model_copy(update={"choices": narrowed(spec.choices or [], name), "by": by})


def _settled(spec: ParamSpec, searched: set[str], train: dict[str, Any]) -> ParamSpec:
    """`by` entries on parameters the next sweep no longer searches (a config cannot refer to
    them): the case for the fixed value, if it has one, becomes the choice list."""
    choices, by = spec.choices, {}
    for other, cases in (spec.by or {}).items():
        if canonical_param(other) in searched:
            by[other] = cases
            continue
        override = cases.get(str(train.get(canonical_param(other))))
        if override is not None and override.choices is not None:
            choices = override.choices
    return spec.model_copy(update={"choices": choices, "by": by or None})


def _importance(study: optuna.Study) -> dict[str, float]:
    from engine.insights.summary import importance

    try:
        return importance(study)
    except UserError:
        return {}


def recommend(study: optuna.Study, config: SweepConfig, fraction: float = 0.2,
              fix_below: float | None = None) -> Recommendation:
    """The focused sweep from the top `fraction` of completed trials.

    With `fix_below`, parameters whose importance is below it are fixed at the best trial's value
    (the fine-tuning stage); the others keep their narrowed ranges."""
    trials = ranked(study)
    metric = config.objective.metrics()[0]
    if not trials:
        raise UserError(f"study '{study.study_name}' has no completed trial yet: nothing to recommend",
                        key="--study")
    n_top = min(len(trials), max(MIN_TOP, math.ceil(fraction * len(trials))))
    top, best = trials[:n_top], trials[0]
    top_params, best_params = [train_params(t.params) for t in top], train_params(best.params)
    notes = []
    if len(study.directions) > 1:
        notes.append(f"{len(study.directions)} objectives: ranked by the first, {metric}")
    if n_top < MIN_TOP:
        notes.append(f"only {n_top} completed trial(s): the ranges are rough; run more trials first")
    scores = _importance(study) if fix_below is not None else {}
    train = config.train.model_dump(mode="json", exclude_none=True)
    space: dict[str, Any] = {}
    changes = []
    for name, spec in config.search_space.items():
        values = [p[name] for p in top_params if name in p]
        before = describe(spec)
        if not values:
            changes.append(Change(name, before, "dropped", None, "inactive in every top trial"))
            continue
        if spec.kind() == "categorical" and spec.by:  # a recipe per value of another: never one fixed value
            space[name] = _narrowed_cases(name, spec, top)
            changes.append(Change(name, before, describe(space[name]), best_params.get(name)))
            continue
        if fix_below is not None and scores and scores.get(name, 0.0) < fix_below and not spec.when \
                and name in best_params:
            train[name] = best_params[name]
            changes.append(Change(name, before, f"fixed at {best_params[name]}", best_params[name],
                                  f"importance {scores.get(name, 0.0):.2f} < {fix_below:g}"))
            continue
        narrowed = _narrowed(spec, values)
        if isinstance(narrowed, ParamSpec):
            space[name] = narrowed
            changes.append(Change(name, before, describe(narrowed), best_params.get(name)))
        elif spec.when:  # a conditional parameter cannot become a fixed train key: one choice left
            space[name] = ParamSpec(choices=[narrowed], when=spec.when)
            changes.append(Change(name, before, f"{narrowed} (when {spec.when})", best_params.get(name)))
        else:
            train[name] = narrowed
            changes.append(Change(name, before, f"fixed at {narrowed}", best_params.get(name),
                                  "every top trial agrees"))
    for name, spec in list(space.items()):  # a `when` on a now fixed parameter holds or not, for good
        fixed = {canonical_param(k): v for k, v in (spec.when or {}).items() if canonical_param(k) not in space}
        if not fixed:
            continue
        if all(matches(v, train.get(k)) for k, v in fixed.items()):
            rest = {k: v for k, v in (spec.when or {}).items() if canonical_param(k) in space}
            space[name] = spec.model_copy(update={"when": rest or None})
        else:
            del space[name]
            changes.append(Change(name, describe(spec), "dropped", None, "its condition no longer holds"))
    for name, spec in list(space.items()):  # a `by` on a now fixed parameter: its case for that value, for good
        if spec.by:
            space[name] = _settled(spec, set(space), train)
    out = config.to_dict()
    out["name"] = f"{study.study_name}-focused"
    out["train"] = train
    out["search_space"] = {k: v.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
                           for k, v in space.items()}
    # Resources come from the platform profile of whichever machine runs the next sweep; the
    # trials' batch sizes were real ones, so no multiplier goes on top of them again.
    out["resources"] = {"batch_multiplier": 1.0}
    return Recommendation(study=study.study_name, metric=metric, completed=len(trials), top=n_top,
                          best=best_params, best_value=best.values[0], config=out, changes=changes,
                          notes=notes)


def write_recommendation(result: Recommendation, path: Path) -> None:
    """The focused sweep as YAML, headed by where it came from and how to run it (the CLI's
    `recommend` and the Analysis screen's `n` write the same file)."""
    from engine.artifacts import dump_yaml, write_atomic

    header = (f"# The focused sweep after '{result.study}': ranges of its top {result.top} of {result.completed} "
              f"completed trials.\n# Run it: tui-hpo run --config {path}")
    write_atomic(path, dump_yaml(result.config, header))
