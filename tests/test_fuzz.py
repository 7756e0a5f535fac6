"""Property-based tests of everything a user types or writes: config files (native, W&B and
Optuna-guide layouts, and raw bytes), search spaces, and `tui-hpo run` arguments.

The property is always the same: the input is accepted, or refused with one UserError on one
printable line (exit code 2 on the command line). Any other exception, a traceback, a hang or
a second line is a bug. Examples are derandomized, so CI sees the same inputs on every run;
`@example`s pin the inputs that found bugs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import optuna
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from engine import config as cfg
from engine.artifacts import dump_yaml
from engine.config.formats import GUIDE_OPTUNA_KEYS, WANDB_METHODS
from engine.config.space import PARAM_ALIASES, TYPE_ALIASES, suggest
from engine.errors import ConfigError, UserError
from engine.sweep.engine import check_buildable
from engine.sweep.resolve import resolve_run
from engine.system.platform import probe_without_torch
from engine.training.models import check_models
from tests.conftest import CONFIGS, invoke, run_cli

# Module-scoped fixtures (a real sweep, a server): all of this file runs in one test process.
pytestmark = pytest.mark.xdist_group("test_fuzz")

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a study per example: no line for each
INFO = probe_without_torch()  # resolve_run's platform report: the same for every example, and fast
TINY = str(CONFIGS / "tiny.yaml")
FUZZ = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- building blocks
#
# Documents are mostly plausible (real keys, values of the right kind, often out of range) with
# now and then a wrong value anywhere: wholly random documents all stop at the first key.

SECTIONS: dict[str, dict[str, Any]] = {
    name: {key: f.annotation for key, f in field.annotation.model_fields.items()}
    for name, field in cfg.SweepConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
PARAMS = sorted(cfg.TUNABLE | set(PARAM_ALIASES) | {"model_kwargs", "nope"})
TRICKY_TEXT = ["", " ", "1e-4", "1e5", "-1E+3", "0x1F", "yes", "off", "null", "~", ".inf", ".nan", "2024-01-01",
               "tpe", "median", "val_f1", "f1", "adamw", "sgd", "test_resnet", "resnet18", "../x", "/abs", "a/b",
               "..", "\x00", "a\nb", "\x1b[2J", "é", "\u202e", "{}", "[]", "*a", "&a", "!!str"]

scalars = (st.none() | st.booleans()
           | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2, 2**31, 2**63])
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(TRICKY_TEXT))
keys = st.sampled_from(PARAMS + [k for ks in SECTIONS.values() for k in ks]) | st.text(max_size=8) | st.integers()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=8)


def rarely_wrong(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`strategy` seven times in eight; else any value at all (a list where a number belongs, ...).
    (`one_of` would not do: it merges equal branches, so repeating one does not weight it.)"""
    return st.sampled_from([True] * 7 + [False]).flatmap(lambda right: strategy if right else values)


small_ints = st.integers(-2, 64) | st.sampled_from([0, 1, 2**31, 10**20])
small_floats = st.floats(-0.5, 2.0) | st.sampled_from([0.0, 1e-4, 0.1, 1.0, 1e308, float("inf"), float("nan")])
numbers = small_ints | small_floats
BY_KEY: dict[str, st.SearchStrategy[Any]] = {  # values that mean something for these keys
    "model": st.sampled_from(["test_resnet", "test_vit", "test_efficientnet", "resnet18", "nope_net", ""]),
    "metric": st.sampled_from(["val_f1", "f1", "eval/f1", "val_accuracy", "loss", "train_time", "val_auc"])
    | st.lists(st.sampled_from(["val_f1", "val_loss", "train_time"]), max_size=3),
    "direction": st.sampled_from(["maximize", "minimize", "up"])
    | st.lists(st.sampled_from(["maximize", "minimize"]), max_size=3),
    "name": st.sampled_from([*cfg.SAMPLERS, *cfg.PRUNERS, "bogus"]),
    "options": st.dictionaries(st.sampled_from(["n_startup_trials", "multivariate", "seed", "percentile", "gamma",
                                                "min_resource", "max_resource", "reduction_factor", "n_warmup_steps",
                                                "interval_steps", "qmc_type", "scramble", "sigma0", "constant_liar",
                                                "population_size", "lower", "upper", "p_threshold", "bogus"]),
                               numbers | st.booleans() | st.sampled_from(["auto", "sobol", "halton", "x"]),
                               max_size=2),
    "model_kwargs": st.dictionaries(st.sampled_from(["drop_rate", "img_size", "num_classes", "bogus"]),
                                    numbers | st.text(max_size=4), max_size=2),
    "path": st.sampled_from(["", "/nonexistent", "\x00", "~nobody/x"]) | st.none(),
    "labels": st.sampled_from(["", "/nonexistent/l.csv", "\x00"]) | st.none(),
    "weights": st.sampled_from(["", "/nonexistent.pt", "\x00"]) | st.none(),
    "gpus": st.lists(st.integers(-1, 3), max_size=3) | st.none(),
}


def of_type(annotation: Any) -> st.SearchStrategy[Any]:
    """A value of a config field's type (int, float, str, Literal[...], unions, lists, dicts)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, UnionType):
        return st.one_of(*(of_type(a) for a in args))
    simple = {type(None): st.none(), bool: st.booleans(), int: small_ints, float: numbers,
              str: st.sampled_from(TRICKY_TEXT) | st.text(max_size=8)}
    if annotation in simple:
        return simple[annotation]
    if origin is list:
        return st.lists(of_type(args[0]), max_size=3)
    return values


def section(name: str) -> st.SearchStrategy[Any]:
    """A section: some of its real keys with values of their type; rarely an unknown key."""
    real = {key: rarely_wrong(BY_KEY.get(key, of_type(annotation))) for key, annotation in SECTIONS[name].items()}
    known = st.fixed_dictionaries({}, optional=real)
    with_unknown = st.fixed_dictionaries({"bogus": values}, optional=real)
    return rarely_wrong(st.sampled_from([True] * 7 + [False]).flatmap(lambda right: known if right else with_unknown))


def ranges() -> st.SearchStrategy[dict[str, Any]]:
    """low/high (mostly low < high), sometimes a step, log or choices instead."""
    bounds = st.tuples(numbers, st.floats(0, 100) | st.integers(0, 100)).map(lambda t: {"low": t[0],
                                                                                         "high": t[0] + t[1]})
    extra = st.fixed_dictionaries({}, optional={"step": rarely_wrong(numbers), "log": rarely_wrong(st.booleans())})
    choices = st.fixed_dictionaries({"choices": rarely_wrong(st.lists(numbers | st.sampled_from(TRICKY_TEXT),
                                                                      max_size=4))})
    return st.one_of(st.builds(lambda b, e: {**b, **e}, bounds, extra), choices,
                     st.fixed_dictionaries({}, optional={"low": numbers, "high": numbers, "step": numbers}))


specs = rarely_wrong(st.builds(
    lambda r, extra: {**r, **extra}, ranges(),
    st.fixed_dictionaries({}, optional={
        "type": rarely_wrong(st.sampled_from([*TYPE_ALIASES, "bogus"])),
        "when": rarely_wrong(st.dictionaries(st.sampled_from(PARAMS), scalars | st.lists(scalars, max_size=3),
                                             max_size=2)),
        "by": rarely_wrong(st.dictionaries(st.sampled_from(PARAMS),
                                           st.dictionaries(st.sampled_from(TRICKY_TEXT) | st.text(max_size=6),
                                                           ranges(), max_size=2), max_size=1)),
    })))


def limits(name: str) -> tuple[float, float]:
    """The range a training key allows, from its field's ge/gt/le/lt (a finite stand-in if open)."""
    low, high = 0.0, 1.0 if cfg.TrainConfig.model_fields[name].annotation is float else 256.0
    for rule in cfg.TrainConfig.model_fields[name].metadata:
        low = next((getattr(rule, a) for a in ("ge", "gt") if hasattr(rule, a)), low)
        high = next((getattr(rule, a) for a in ("le", "lt") if hasattr(rule, a)), high)
    return low, high


@st.composite
def plausible_spec(draw: st.DrawFn, name: str, override: bool = False) -> dict[str, Any]:
    """A spec that fits its training key: choices of its literals, or bounds inside its range
    with now and then a log scale, a step or a type (or a bound just outside). An `override` (a
    `by` case) has bounds or choices only."""
    annotation = cfg.TrainConfig.model_fields[name].annotation
    if get_origin(annotation) is Literal or annotation is str:
        options = get_args(annotation) or ("test_resnet", "test_vit", "test_efficientnet")
        return {"choices": draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique=True))}
    low, high = limits(name)
    if annotation is int:
        a = draw(st.integers(int(low), int(min(high, low + 32)) - 1))
        b = draw(st.integers(a + 1, int(min(high, a + 64))))
        steps = st.integers(1, 3) | st.just(0.5)
    else:
        a, b = sorted(draw(st.lists(st.floats(low, high), min_size=2, max_size=2, unique=True)))
        steps = st.sampled_from([(b - a) / 4, (b - a) / 3.3])
    spec: dict[str, Any] = {"low": a, "high": b}
    extras = [{}, {}, {"step": draw(steps)}, {"log": a > 0}, {"type": "int" if annotation is int else "float"},
              {"type": draw(st.sampled_from(sorted(TYPE_ALIASES)))}]
    spec.update(draw(st.sampled_from(extras[:3] if override else extras)))
    if draw(st.integers(0, 9)) == 0:  # a bound just outside what the key allows
        spec["high" if draw(st.booleans()) else "low"] = high + 1 if draw(st.booleans()) else low - 1
    return spec


@st.composite
def plausible_spaces(draw: st.DrawFn) -> dict[str, Any]:
    """Up to four parameters with fitting specs (rarely a random one), some conditional on
    another's value (`when`) or with a range per value of another (`by`)."""
    names = draw(st.lists(st.sampled_from(sorted(cfg.TUNABLE)), max_size=4, unique=True))
    space = {name: draw(st.sampled_from([True] * 7 + [False]).flatmap(
        lambda fits, name=name: plausible_spec(name) if fits else specs)) for name in names}
    categorical = [n for n in names if isinstance(space[n], dict) and isinstance(space[n].get("choices"), list)
                   and space[n]["choices"]]
    for name in names:
        if not categorical or not isinstance(space[name], dict) or draw(st.integers(0, 2)):
            continue
        other = draw(st.sampled_from(categorical))
        value = draw(st.sampled_from(space[other]["choices"]))
        if draw(st.booleans()):
            space[name]["when"] = {other: value}
        else:
            space[name]["by"] = {other: {str(value): draw(plausible_spec(name, override=True))}}
    return space


spaces = rarely_wrong(st.sampled_from([True] * 5 + [False]).flatmap(
    lambda fits: plausible_spaces() if fits else st.dictionaries(st.sampled_from(PARAMS), specs, max_size=4)))

native_docs = st.fixed_dictionaries({}, optional={
    **{name: section(name) for name in SECTIONS},
    "search_space": spaces,
    "name": rarely_wrong(st.sampled_from(TRICKY_TEXT) | st.text(max_size=8)), "description": scalars,
    "extends": st.sampled_from(["quick", "full", "nope", "../nope.yaml", "sweep.yaml"]) | scalars,
    "per_platform": rarely_wrong(st.dictionaries(st.sampled_from(["cpu", "cuda", "mps", "tpu"]),
                                                 st.fixed_dictionaries({}, optional={"train": section("train")}),
                                                 max_size=2)),
})

wandb_params = rarely_wrong(st.fixed_dictionaries({}, optional={
    "values": rarely_wrong(st.lists(numbers | st.sampled_from(TRICKY_TEXT), max_size=4)), "value": scalars,
    "distribution": rarely_wrong(st.sampled_from(["categorical", "uniform", "int_uniform", "log_uniform_values",
                                                  "q_uniform", "q_log_uniform_values", "inv_log_uniform_values",
                                                  "normal", "log_uniform", "q_log_uniform", "inv_log_uniform",
                                                  "q_normal", "log_normal", "q_log_normal", "beta"])),
    "min": numbers, "max": numbers, "q": numbers, "mu": numbers, "sigma": numbers,
}))
wandb_docs = st.fixed_dictionaries({
    "method": rarely_wrong(st.sampled_from([*WANDB_METHODS, "hyperopt"])),
    "parameters": rarely_wrong(st.dictionaries(st.sampled_from(PARAMS), wandb_params, max_size=4)),
}, optional={
    "metric": rarely_wrong(st.fixed_dictionaries({}, optional={
        "name": rarely_wrong(BY_KEY["metric"]), "goal": rarely_wrong(st.sampled_from(["maximize", "minimize", "up"])),
        "target": numbers})),
    "early_terminate": rarely_wrong(st.fixed_dictionaries({}, optional={
        "type": rarely_wrong(st.sampled_from(["hyperband", "envelope"])),
        "min_iter": numbers, "max_iter": numbers, "eta": numbers, "s": numbers})),
    "run_cap": rarely_wrong(small_ints), "program": scalars, "name": scalars, "train": section("train"),
})

guide_docs = st.fixed_dictionaries({
    "optuna": rarely_wrong(st.fixed_dictionaries({}, optional={
        **{key: rarely_wrong(numbers | st.sampled_from(TRICKY_TEXT)) for key in GUIDE_OPTUNA_KEYS},
        "metric": rarely_wrong(BY_KEY["metric"]),
        "direction": rarely_wrong(BY_KEY["direction"]),
        "sampler": rarely_wrong(st.sampled_from(["TPESampler", "RandomSampler", "CmaEsSampler", "GridSampler",
                                                 "QMCSampler", "x"])),
        "pruning": rarely_wrong(st.fixed_dictionaries({}, optional={
            "enabled": rarely_wrong(st.booleans()), "patience": rarely_wrong(small_ints),
            "pruner": rarely_wrong(st.sampled_from(["median", "hyperband", "asha"]))})),
    })),
}, optional={
    "quick_validation": rarely_wrong(st.fixed_dictionaries({}, optional={
        "epochs": rarely_wrong(small_ints), "folds": rarely_wrong(small_ints),
        "batch_size_override": rarely_wrong(small_ints)})),
    "search_space": rarely_wrong(st.dictionaries(st.sampled_from([*PARAMS, "advanced_params"]), specs, max_size=4)),
    "train": section("train"),
})

documents = native_docs | wandb_docs | guide_docs


def billion_laughs(levels: int, width: int, where: str) -> str:
    """Each anchor is a list of `width` aliases to the one before: width**levels leaves."""
    lines = ["l0: &l0 [lol]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    top = f"*l{levels - 1}"
    placed = {"top": f"bomb: {top}", "choices": f"search_space:\n  batch_size: {{choices: {top}}}",
              "kwargs": f"train:\n  model_kwargs: {{x: {top}}}", "when": f"search_space:\n  lr: {{low: 0.001, "
              f"high: 0.1, when: {{optimizer: {top}}}}}\n  optimizer: {{choices: [sgd]}}"}[where]
    return "\n".join(lines) + "\n" + placed + "\n"


def deep(depth: int, style: str) -> str:
    """Nesting `depth` levels deep, in flow or block style, under a key the loader walks."""
    if style == "list":
        return "train:\n  model_kwargs: {x: " + "[" * depth + "]" * depth + "}\n"
    if style == "map":
        return "sampler:\n  options: " + "{a: " * depth + "1" + "}" * depth + "\n"
    return "search_space:\n" + "".join("  " * (i + 1) + "a:\n" for i in range(min(depth, 200))) + "  " * 202 + "1\n"


HOSTILE_TEXT = [
    "train: !!python/object/apply:os.system ['echo pwned']\n",
    "!!python/object/new:engine.config.SweepConfig {}\n",
    "train: {model: !!python/name:os.system}\n",
    "train: {model_kwargs: {x: !!binary aGVsbG8=}}\n",
    "search_space:\n  lr: {low: 0.001, high: 0.1, when: {optimizer: !!binary /w==}}\n  optimizer: {choices: [sgd]}\n",
    "search_space:\n  lr: {low: 0.001, high: 0.1, when: {optimizer: !!set {sgd}}}\n  optimizer: {choices: [sgd]}\n",
    "description: 2024-01-01\n",
    "a: !custom 1\n",
    "train: {epochs: 3}\n---\ntrain: {epochs: 4}\n",
    "a: &x [*x]\n",
    "search_space: &s {lr: *s}\n",
    "train: {epochs: 3\n",
    "\t- 1\n",
    "\ufeffname: bom\n",
    "name: 1e5\n",
]

raw_texts = (st.text(max_size=200) | st.sampled_from(HOSTILE_TEXT)
             | st.builds(billion_laughs, st.integers(2, 12), st.integers(2, 10),
                         st.sampled_from(["top", "choices", "kwargs", "when"]))
             | st.builds(deep, st.integers(1, 3000), st.sampled_from(["list", "map", "block"])))
raw_bytes = st.binary(max_size=200) | st.builds(lambda b: b"name: x\ndescription: " + b + b"\n",
                                                st.binary(min_size=1, max_size=20))

env_vars = st.sampled_from([False] * 3 + [True]).flatmap(lambda some: st.just({}) if not some else st.dictionaries(
    st.sampled_from([f"TUI_HPO__{s.upper()}__{k.upper()}" for s, ks in SECTIONS.items() for k in ks]
                    + ["TUI_HPO__", "TUI_HPO__TRAIN", "TUI_HPO__TRAIN____LR", "TUI_HPO__TRAIN__LR__X",
                       "TUI_HPO__SEARCH_SPACE__LR"]),
    st.sampled_from(TRICKY_TEXT) | st.text(max_size=10), max_size=3))


# ---------------------------------------------------------------- the property


def assert_clean(exc: UserError) -> None:
    message = str(exc)
    assert message and message.isprintable(), repr(message)  # one line, no control characters


def load_checked(path: Path, environ: dict[str, str] | None = None) -> cfg.SweepConfig | None:
    """What `tui-hpo run --config PATH` does before a study exists: resolve every layer, then build
    the models (on the meta device), the sampler and the pruner. None if refused cleanly."""
    try:
        resolved = resolve_run(None, str(path), {}, environ=environ or {}, info=INFO)
        check_models(resolved.config)
        check_buildable(resolved.config)
    except UserError as exc:
        assert_clean(exc)
        return None
    return resolved.config


def assert_storable(config: cfg.SweepConfig, folder: Path) -> None:
    """An accepted config is saved as JSON in the storage and as YAML beside the study, and
    `--resume` loads that YAML again: both must work and give back the same config."""
    saved = config.to_dict()
    json.dumps(saved, allow_nan=False)
    assert config.budget.n_trials < 2**31
    again = folder / "resume.yaml"
    again.write_text(dump_yaml(saved))
    assert cfg.resolve({}, config_file=str(again), environ={}).to_dict() == saved


def check_document(text: str | bytes, environ: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogateescape")
        config = load_checked(path, environ)
        if config is not None:
            assert_storable(config, Path(tmp))


def yaml_of(document: dict[str, Any]) -> str:
    """The document as the project writes YAML: strings stay strings (`'1e-4'`) when read back."""
    return dump_yaml(document)


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=250)
@given(document=documents, environ=env_vars)
# Each was a TypeError traceback: comparing a string with a number, hashing a list, dict() of a number,
# sorting keys of mixed types.
@example(document={"search_space": {"batch_size": {"choices": [64, "x"]}},
                   "quick_validation": {"batch_size_override": 32}, "optuna": {}}, environ={})
@example(document={"method": [], "parameters": {}}, environ={})
@example(document={"optuna": {}, "quick_validation": {}, "train": 1}, environ={})
@example(document={"optuna": {"pruning": {"accum_steps": None, 0: None}}}, environ={})
def test_config_documents_load_or_fail_in_one_line(document: dict[str, Any], environ: dict[str, str]) -> None:
    check_document(yaml_of(document), environ)


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=150)
@given(text=raw_texts | raw_bytes)
@example(text=billion_laughs(10, 9, "choices"))  # was a hang, then out of memory: 9**10 values
@example(text=billion_laughs(10, 9, "when"))  # the same, in a value no check looks into
@example(text=deep(3000, "list"))  # was a RecursionError traceback from the YAML parser
@example(text=HOSTILE_TEXT[4])  # was a crash when saving: bytes that are not UTF-8 under when:
@example(text="name: '1e-4'\ndescription: '1e5'\n")  # was saved unquoted: --resume read floats
def test_raw_config_bytes_load_or_fail_in_one_line(text: str | bytes) -> None:
    check_document(text)


# ---------------------------------------------------------------- search spaces

FIXED = cfg.TrainConfig().model_dump()


def within(value: Any, spec: Any) -> bool:
    """`value` is one of the choices, or inside the bounds, of the spec or of one of its `by` cases."""
    if spec.kind() == "categorical":
        return value in spec.choices or any(value in (o.choices or []) for by_value in (spec.by or {}).values()
                                            for o in by_value.values())
    if spec.kind() == "int" and not isinstance(value, int):
        return False
    cases = [(o.low, o.high) for by_value in (spec.by or {}).values() for o in by_value.values()]
    return any((spec.low if low is None else low) <= value <= (spec.high if high is None else high)
               for low, high in [(None, None), *cases])


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=250)
@pytest.mark.filterwarnings("ignore:The distribution is specified by")  # a step that does not divide
@given(raw=spaces)
@example(raw={"accum_steps": {"low": 0, "high": 1.0}})  # sampled 0.55 for a whole-number key
@example(raw={"epochs": {"type": "int", "low": 1, "high": 5, "step": 0.5}})  # a ValueError in every trial
@example(raw={"model": {"choices": ["test_resnet", "test_vit"]},  # Optuna: "does not support dynamic value space"
              "optimizer": {"choices": ["adamw"], "by": {"model": {"test_resnet": {"choices": ["adamw", "adam"]}}}}})
def test_search_spaces_sample_within_bounds_or_name_the_key(raw: Any) -> None:
    try:
        config = cfg.validate(cfg.to_native({"search_space": raw}, "fuzz"), None)
    except ConfigError as exc:
        assert_clean(exc)
        assert exc.key and exc.key.startswith("search_space"), str(exc)
        return
    space = config.search_space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        trial = study.ask()
        values = suggest(trial, space, FIXED)
        for name, value in values.items():
            assert within(value, space[name]), (name, value)
        # The worker trains with these values: each must be valid for its training key.
        cfg.TrainConfig.model_validate({**FIXED, **values})
        study.tell(trial, 0.0)


# ---------------------------------------------------------------- study names

names = (st.text(max_size=24) | st.sampled_from(["../x", "/abs", "a/b", "", " ", ".", "..", "a\\b", "x\x1by",
                                                  "\u202eevil", "caf\udce9", "a\u00a0b", "1e-4", "-x", "x" * 300])
         | st.lists(st.sampled_from(["..", ".", "a", ""]), min_size=1, max_size=4).map("/".join))


@settings(FUZZ, max_examples=300)
@given(name=names)
def test_a_study_name_is_one_folder_under_the_workspace(name: str) -> None:
    try:
        cfg.check_study_name(name, "--study")
    except ConfigError as exc:
        assert_clean(exc)
        assert exc.key == "--study" and len(str(exc)) < 300, str(exc)
        return
    workdir = Path("/workspace")
    folder = Path(os.path.normpath(workdir / name))
    assert folder.parent == workdir and folder.name == name
    assert name.isprintable()
    name.encode("utf-8")  # the storage keeps it as text


@pytest.fixture(scope="module")
def escaped_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose database holds a finished sweep named `../escaped` (the storage was
    written by something other than `tui-hpo run`, which refuses the name)."""
    from engine.storage import Store, optuna_storage, study_id

    workdir = tmp_path_factory.mktemp("escaped")
    url = f"sqlite:///{workdir / 'hpo.db'}"
    config = cfg.resolve({}, config_file=TINY, environ={})
    storage = optuna_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="../escaped", storage=storage, direction="maximize")
    study.optimize(lambda trial: suggest(trial, config.search_space, FIXED)["lr"], n_trials=4)
    Store(url).create_sweep(study_id(storage, "../escaped"), "../escaped", config.to_dict(), 4)
    return workdir


@pytest.mark.parametrize("command", ["export", "recommend", "visualize"])
def test_commands_never_write_to_a_study_folder_outside_the_workspace(escaped_study: Path, command: str) -> None:
    result = run_cli(command, "--workdir", str(escaped_study), "--study", "../escaped")
    assert result.returncode == 2, result.stderr + result.stdout
    assert result.stderr.startswith("tui-hpo: error: --study: study name '../escaped' contains a path separator")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (escaped_study.parent / "escaped").exists()


@pytest.mark.parametrize(("where", "name"), [("--study", "../x"), ("--study", "/abs"), ("--study", "a/b"),
                                             ("--study", ""), ("--study", "a\x07b"), ("name", "../x"),
                                             ("file", "..")])
def test_run_refuses_a_study_name_that_is_not_one_folder(tmp_path: Path, where: str, name: str) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text((f"name: {json.dumps(name)}\n" if where == "name" else "") + (CONFIGS / "tiny.yaml").read_text()
                      .replace("name: tiny\n", ""))
    if where == "file":  # `...yaml`: its stem, the default study name, is `..`
        config = config.rename(tmp_path / f"{name}.yaml")
    args = ["--study", name] if where == "--study" else []
    result = run_cli("run", "--config", str(config), "--workdir", str(tmp_path / "runs"), "--no-tui", *args)
    assert result.returncode == 2, result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    key = "--study" if where == "--study" else f"{config}: name"
    assert len(lines) == 1 and lines[0].startswith(f"tui-hpo: error: {key}: study name "), lines
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == [config.name]


# ---------------------------------------------------------------- the command line

TMP = "{tmp}"  # in generated arguments: the test's folder, filled in by the test
unicode = st.text(max_size=12).filter(lambda s: not s.startswith("-"))
cli_numbers = st.sampled_from([True] * 3 + [False]).flatmap(
    lambda number: st.integers(-5, 10**25).map(str) if number
    else st.sampled_from(["0", "-1", "nan", "inf", "1e400", "", "many"]) | unicode)
# Never a dataset that exists: every argument list ends at the latest at the data scan, so none
# can start a real sweep.
cli_paths = (st.sampled_from([f"{TMP}/missing", "", "missing", "é/ü", f"{TMP}/no\nline"])
             | unicode.map(lambda s: f"{TMP}/absent/" + s.replace("\x00", "")))
CLI_OPTIONS: dict[str, st.SearchStrategy[str]] = {
    "--preset": st.sampled_from(["quick", "full", "fast", "../quick", ""]) | unicode,
    "--config": st.sampled_from([TINY, f"{TMP}/garbage.yaml", TMP, "/dev/zero", ""]) | cli_paths,
    "--n-trials": cli_numbers, "--timeout": cli_numbers, "--parallel": cli_numbers, "--trials-per-gpu": cli_numbers,
    "--data": cli_paths, "--labels": cli_paths,
    "--study": st.sampled_from(["../x", "/abs", "a/b", "", ".", "x\x1by", "ok"]) | unicode,
    "--storage": st.sampled_from(["nonsense", "sqlite:///", f"sqlite:///{TMP}/none/x.db", "postgresql://"]),
    "--workdir": st.sampled_from(["runs", "", "é"]),
}
TRAILING = [[], [], ["--no-tui"], ["--no-tui"], ["--resume"], ["--no-tui", "--resume"], ["stray"], ["--bogus", "x"]]


@st.composite
def run_arguments(draw: st.DrawFn) -> list[str]:
    """Up to four options of `run` with random values; flags, or now and then a stray argument."""
    chosen = draw(st.lists(st.sampled_from(sorted(CLI_OPTIONS)), max_size=4, unique=True))
    args = [a for name in chosen for a in (name, draw(CLI_OPTIONS[name]))]
    return args + draw(st.sampled_from(TRAILING))


@pytest.fixture(scope="module")
def cli_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "garbage.yaml").write_bytes(b"\xff\xfe: [\n")
    return tmp


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=15)
@given(args=run_arguments())
@example(args=["--config", TINY, "--study", "../x"])  # was accepted: the study folder was DIR/../x
@example(args=["--storage", "nonsense", "--resume", "--study", "x"])  # was a traceback (ArgumentError)
@example(args=["--config", "/dev/zero"])  # was a hang: read until memory ran out
@example(args=["--config", f"{TMP}/a\nb.yaml"])  # was two lines: the newline printed as is
@example(args=["--n-trials", "many"])  # was four lines: click's usage, hint and error
def test_run_arguments_fail_in_one_line(cli_tmp: Path, args: list[str]) -> None:
    """In this process (each example fails before anything starts, so no worker, app or signal
    is involved): the same code and output as a fresh `tui-hpo run`, without its second of imports."""
    args = [a.replace(TMP, str(cli_tmp)) for a in args]
    env = {"TUI_HPO__DATA__PATH": str(cli_tmp / "no-data")}  # the default data: missing, so nothing trains
    here = os.getcwd()
    os.chdir(cli_tmp)  # relative paths (`--workdir runs`) land in the example's folder
    try:
        result = invoke("run", "--workdir", str(cli_tmp / "runs"), *args, env=env)
    finally:
        os.chdir(here)
    output = result.stderr + result.stdout
    assert "Traceback" not in output, output
    assert result.returncode == 2, output  # every list here holds a mistake, at the least the data
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tui-hpo: error: "), result.stderr
