"""Search spaces: every kind of parameter, conditions, and every sampler and pruner."""

from __future__ import annotations

import optuna
import pytest

from engine.config import resolve
from engine.config.space import ParamSpec, grid_values, suggest
from engine.sweep.samplers import make_pruner, make_sampler

FIXED = {"model": "test_resnet", "optimizer": "adamw"}


def space(**specs: dict) -> dict[str, ParamSpec]:
    return {name: ParamSpec.model_validate(spec) for name, spec in specs.items()}


def sample_many(s: dict[str, ParamSpec], n: int = 60) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest(trial, s, FIXED))
        study.tell(trial, 0.0)
    return out


def test_kinds_ranges_and_steps() -> None:
    s = space(lr={"low": 1e-4, "high": 1e-2, "log": True}, epochs={"low": 2, "high": 8, "step": 2},
              dropout={"low": 0.0, "high": 0.5, "step": 0.1}, batch_size={"choices": [16, 32]})
    for values in sample_many(s):
        assert 1e-4 <= values["lr"] <= 1e-2
        assert values["epochs"] in (2, 4, 6, 8) and isinstance(values["epochs"], int)
        assert round(values["dropout"] * 10, 6) == round(values["dropout"] * 10)
        assert values["batch_size"] in (16, 32)


def test_when_makes_a_parameter_conditional() -> None:
    s = space(optimizer={"choices": ["adamw", "sgd"]},
              momentum={"low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}})
    seen = sample_many(s)
    assert any(v["optimizer"] == "sgd" for v in seen) and any(v["optimizer"] == "adamw" for v in seen)
    for values in seen:
        assert ("momentum" in values) == (values["optimizer"] == "sgd")


def test_by_gives_per_model_ranges() -> None:
    s = space(model={"choices": ["test_resnet", "test_vit"]},
              lr={"low": 1e-3, "high": 1e-2, "log": True, "by": {"model": {"test_vit": {"low": 1e-5, "high": 1e-4}}}})
    for values in sample_many(s):
        if values["model"] == "test_vit":
            assert 1e-5 <= values["lr"] <= 1e-4
        else:
            assert 1e-3 <= values["lr"] <= 1e-2


def test_grid_values() -> None:
    s = space(batch_size={"choices": [16, 32]}, epochs={"low": 1, "high": 3}, dropout={"low": 0.0, "high": 0.2,
                                                                                      "step": 0.1})
    grid = grid_values(s)
    assert grid["batch_size"] == [16, 32] and grid["epochs"] == [1, 2, 3]
    assert grid["dropout"] == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "qmc", "nsga2"])
def test_every_sampler_drives_the_space(sampler: str) -> None:
    config = resolve({}, preset="quick", environ={}, platform="cpu")
    config.sampler.name = sampler
    if sampler == "grid":
        config.search_space = space(lr={"choices": [0.001, 0.01]}, batch_size={"choices": [32, 64]})
    study = optuna.create_study(sampler=make_sampler(config), directions=["maximize"])
    for i in range(6):
        trial = study.ask()
        values = suggest(trial, config.search_space, config.train.model_dump())
        study.tell(trial, float(i % 3) + (values.get("lr") or 0))
    assert len(study.trials) == 6


@pytest.mark.parametrize("pruner", ["none", "median", "percentile", "successive_halving", "hyperband",
                                    "threshold", "wilcoxon"])
def test_every_pruner_builds(pruner: str) -> None:
    config = resolve({}, preset="quick", environ={}, platform="cpu")
    config.pruner.name = pruner
    if pruner == "threshold":
        config.pruner.options = {"lower": 0.1}
    assert make_pruner(config) is not None
    config.pruner.patience = 2
    assert isinstance(make_pruner(config), optuna.pruners.BasePruner)
