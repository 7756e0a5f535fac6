"""Search spaces: every kind of parameter, conditions, and every sampler and pruner."""

from __future__ import annotations

import itertools

import optuna
import pytest

from engine.config import SweepConfig, resolve
from engine.config.space import ParamSpec, default_point, grid_points, suggest, train_params
from engine.sweep.resolve import cap_to_grid
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


def test_by_gives_per_model_choices_under_a_name_of_their_own() -> None:
    """Optuna refuses a second choice list under one name: the test_vit list samples as
    `batch_size[model=test_vit]`, and suggest() still returns it as batch_size."""
    s = space(model={"choices": ["test_resnet", "test_vit"]},
              batch_size={"choices": [64, 128], "by": {"model": {"test_vit": {"choices": [16, 32]}}}},
              image_size={"choices": [32], "by": {"model": {"test_vit": {"choices": [32, 48]}}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = suggest(trial, s, FIXED)
        study.tell(trial, 0.0)
        vit = values["model"] == "test_vit"
        assert values["batch_size"] in ((16, 32) if vit else (64, 128))
        assert values["image_size"] in ((32, 48) if vit else (32,))
        assert ("batch_size[model=test_vit]" in trial.params) == vit and ("batch_size" in trial.params) != vit
        assert train_params(trial.params) == values
        seen.add((values["model"], values["batch_size"]))
    assert len(seen) == 4


def test_grid_points_of_a_plain_space_are_the_product() -> None:
    s = space(batch_size={"choices": [16, 32]}, epochs={"low": 1, "high": 3}, dropout={"low": 0.0, "high": 0.2,
                                                                                      "step": 0.1})
    points = grid_points(s, FIXED)
    assert len(points) == 2 * 3 * 3
    assert {p["batch_size"] for p in points} == {16, 32} and {p["epochs"] for p in points} == {1, 2, 3}
    assert sorted({p["dropout"] for p in points}) == pytest.approx([0.0, 0.1, 0.2])


RECIPES = {"search_space": {
    "model": {"choices": ["test_resnet", "test_vit"]},
    "batch_size": {"choices": [64, 128], "by": {"model": {"test_vit": {"choices": [16, 32]}}}},
    "image_size": {"choices": [32], "by": {"model": {"test_vit": {"choices": [32, 48]}}}},
    "optimizer": {"choices": ["adamw", "sgd"]},
    "momentum": {"choices": [0.8, 0.9], "when": {"optimizer": "sgd"}},
}, "sampler": {"name": "grid", "seed": 3}, "budget": {"n_trials": 100}}


def valid_recipes() -> set[tuple]:
    """The combinations the space allows, written out by hand: (model, batch, image, optimizer, momentum)."""
    per_model = {"test_resnet": ([64, 128], [32]), "test_vit": ([16, 32], [32, 48])}
    optimizers = [("adamw", None), ("sgd", 0.8), ("sgd", 0.9)]
    return {(model, batch, image, optimizer, momentum) for model, (batches, images) in per_model.items()
            for batch, image, (optimizer, momentum) in itertools.product(batches, images, optimizers)}


def recipe(values: dict) -> tuple:
    return (values["model"], values["batch_size"], values["image_size"], values["optimizer"], values.get("momentum"))


def test_a_grid_with_conditions_runs_each_valid_combination_once() -> None:
    """18 valid combinations (a cartesian product of the lists would give 2*4*2*2*2 = 64, most of
    them invalid or the same run twice); a sequential study runs each once, then n_trials is capped."""
    config = SweepConfig.model_validate(RECIPES)
    expected = valid_recipes()
    assert len(expected) == 18 and len(grid_points(config.search_space, config.train.model_dump())) == 18
    study = optuna.create_study(sampler=make_sampler(config), direction="maximize")
    ran = []
    for _ in range(18):
        trial = study.ask()
        ran.append(recipe(suggest(trial, config.search_space, config.train.model_dump())))
        study.tell(trial, 0.0)
    assert len(set(ran)) == len(ran) and set(ran) == expected
    assert cap_to_grid(config) == "the grid has 18 points: n_trials capped at 18" and config.budget.n_trials == 18


def test_grid_workers_skip_points_that_other_trials_hold() -> None:
    """Two workers (samplers of their own, one storage): a point is taken by a trial that brought
    its own params (a retry, an enqueued trial) and by one still running, so 17 trials asked at
    once before any is told still get the 17 other points."""
    config = SweepConfig.model_validate(RECIPES)
    storage = optuna.storages.InMemoryStorage()
    workers = [optuna.create_study(storage=storage, study_name="g", sampler=make_sampler(config, 0)),
               optuna.load_study(storage=storage, study_name="g", sampler=make_sampler(config, 1))]
    workers[0].enqueue_trial({"model": "test_vit", "batch_size[model=test_vit]": 16,
                              "image_size[model=test_vit]": 48, "optimizer": "adamw"})
    first = workers[0].ask()
    ran = [recipe(suggest(first, config.search_space, config.train.model_dump()))]
    workers[0].tell(first, 0.0)
    running = [workers[i % 2].ask() for i in range(17)]
    ran += [recipe(suggest(t, config.search_space, config.train.model_dump())) for t in running]
    assert ran[0] == ("test_vit", 16, 48, "adamw", None)
    assert len(set(ran)) == 18 and set(ran) == valid_recipes()


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


def test_the_default_point_is_the_recipe_where_the_space_holds_it() -> None:
    space = {name: ParamSpec.model_validate(spec) for name, spec in {
        "model": {"choices": ["test_resnet", "test_vit"]},
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "batch_size": {"choices": [64, 128], "by": {"model": {"test_vit": {"choices": [16, 32]}}}},
        "momentum": {"low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}},
        "epochs": {"low": 2, "high": 8, "step": 2},
    }.items()}
    fixed = {"model": "test_vit", "lr": 1e-3, "batch_size": 32, "optimizer": "adamw", "momentum": 0.9, "epochs": 3}
    # momentum is inactive (adamw), epochs 3 is off the step-2 grid: both left to the sampler
    assert default_point(space, fixed) == {"model": "test_vit", "lr": 1e-3, "batch_size[model=test_vit]": 32}
    assert default_point(space, {**fixed, "lr": 0.5, "model": "convnext"}) == {}  # outside: nothing forced
