"""The Expert tier's config: `backend`, `scheduler`, `ray` and the per-trial resources, checked like
every other section (one line naming the key, exit code 2), their defaults filled in once, and
the Ray scheduler each section builds. No Ray is started here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, RadioButton, Static

from engine.config import resolve
from engine.config.schema import (
    AshaConfig,
    Mutation,
    Pb2Config,
    PbtConfig,
    SweepConfig,
    validate,
)
from engine.datasets.defaults import fit_epochs
from engine.errors import ConfigError
from engine.tune.schedulers import RAY_MISSING, build, clip, ray_missing
from tests.conftest import invoke, listed_models, run_cli
from tests.test_tui import text_of, wait_for

SPACE = {
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.5},
    "accum_steps": {"low": 1, "high": 4},  # an int range: not mutated by default
    "optimizer": {"choices": ["adamw", "sgd"]},
    "momentum": {"low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}},  # not in every trial
}
RAY = {"backend": "ray", "train": {"epochs": 6}, "search_space": SPACE}
PROGRAM = {"command": ["{python}", "-c", "pass"], "metric": "acc", "direction": "maximize"}


def ray_config(**sections: Any) -> SweepConfig:
    return validate({**RAY, **sections}, "sweep.yaml")


def test_backend_ray_without_a_scheduler_gets_asha_with_every_default_filled() -> None:
    config = ray_config()
    assert config.to_dict()["scheduler"] == {"name": "asha", "grace_period": 1, "reduction_factor": 3.0,
                                             "max_t": 6, "brackets": 1}, "max_t is the trial's epochs"
    assert config.ray.address is None and config.ray.dashboard is False
    assert config.resources.gpus_per_trial is None and config.resources.cpus_per_trial is None
    assert validate({"train": {"epochs": 6}}, None).scheduler is None, "the optuna backend has none"
    # The most epochs a trial can run: the space's, where it searches them
    assert ray_config(search_space={**SPACE, "epochs": {"choices": [2, 9, 4]}}).scheduler.max_t == 9
    assert ray_config(scheduler={"name": "hyperband"}).scheduler.max_t == 6
    assert ray_config(scheduler={"max_t": 4}).scheduler.max_t == 4, "a max_t of the user's stays"
    assert ray_config(scheduler={"grace_period": 2}).scheduler == AshaConfig(grace_period=2, max_t=6), \
        "a section without a name is asha's"
    # A program's trials report at their own pace: max_t is the user's, nothing is filled in
    assert ray_config(objective=PROGRAM, scheduler={"max_t": 20}).scheduler.max_t == 20
    assert ray_config(objective=PROGRAM, scheduler={"name": "median"}).scheduler.name == "median"


def test_pbt_and_pb2_change_the_float_parameters_every_trial_has_by_default() -> None:
    pbt = ray_config(scheduler={"name": "pbt"}).scheduler
    assert isinstance(pbt, PbtConfig) and (pbt.perturbation_interval, pbt.quantile_fraction) == (2, 0.25)
    assert pbt.mutations == {"lr": Mutation(low=1e-4, high=1e-2, log=True),
                             "dropout": Mutation(low=0.0, high=0.5, log=False)}
    pb2 = ray_config(scheduler={"name": "pb2"}).scheduler
    assert isinstance(pb2, Pb2Config) and pb2.hyperparam_bounds == {"lr": (1e-4, 1e-2), "dropout": (0.0, 0.5)}
    own = ray_config(scheduler={"name": "pbt", "mutations": {"optimizer": ["adamw", "sgd"]}}).scheduler
    assert own.mutations == {"optimizer": Mutation(choices=["adamw", "sgd"])}, "the user's replace the default"
    saved = ray_config(scheduler={"name": "pbt"}).to_dict()
    assert SweepConfig.model_validate(saved).to_dict() == saved, "the saved config reads back the same"


def test_the_trials_length_set_by_min_steps_moves_max_t_with_it() -> None:
    train, space = {"epochs": 2, "min_steps": 100, "batch_size": 10}, {"lr": SPACE["lr"]}
    config = ray_config(train=train, search_space=space)
    assert config.scheduler.max_t == 2
    fit_epochs(config, n_train=100)  # 10 steps an epoch: 10 epochs
    assert config.train.epochs == 10 and config.scheduler.max_t == 10
    own = ray_config(train=train, search_space=space, scheduler={"max_t": 3})
    fit_epochs(own, n_train=100)
    assert own.scheduler.max_t == 3


BAD = {
    "unknown_option": ({"scheduler": {"name": "pbt", "grace_period": 2}},
                       "scheduler.grace_period: unknown option of the pbt scheduler (its options: "
                       "perturbation_interval, quantile_fraction, resample_probability, mutations, synch)"),
    "option_of_another": ({"scheduler": {"name": "asha", "mutations": {}}}, "scheduler.mutations: unknown option "
                          "of the asha scheduler (its options: grace_period, reduction_factor, max_t, brackets)"),
    "fifo_has_none": ({"scheduler": {"name": "fifo", "max_t": 3}}, "scheduler.max_t: unknown option of the fifo "
                      "scheduler (its options: none)"),
    "unknown_scheduler": ({"scheduler": {"name": "bohb"}}, "scheduler.name: unknown scheduler 'bohb' (use one of "
                          "asha, hyperband, pbt, pb2, median, fifo)"),
    "wrong_type": ({"scheduler": {"grace_period": "soon"}}, "scheduler.grace_period: input should be a valid integer"),
    "reduction_factor_1": ({"scheduler": {"reduction_factor": 1}}, "scheduler.reduction_factor: input should be "
                           "greater than 1"),
    "grace_past_max_t": ({"scheduler": {"grace_period": 8}}, "scheduler.grace_period: must be <= max_t (8 > 6)"),
    "quantile_over_half": ({"scheduler": {"name": "pbt", "quantile_fraction": 0.6}}, "scheduler.quantile_fraction"),
    "mutation_of_unknown_param": ({"scheduler": {"name": "pbt", "mutations": {"weight_decay": [0.01]}}},
                                  "scheduler.mutations.weight_decay: 'weight_decay' is not a parameter of "
                                  "search_space"),
    "mutation_of_conditional_param": ({"scheduler": {"name": "pbt", "mutations": {"momentum": [0.9]}}},
                                      "scheduler.mutations.momentum: 'momentum' exists only in some trials"),
    "mutation_half_a_range": ({"scheduler": {"name": "pbt", "mutations": {"lr": {"low": 0.1}}}},
                              "scheduler.mutations.lr: give a list of choices, or low and high"),
    "mutation_out_of_the_keys_domain": ({"scheduler": {"name": "pbt", "mutations": {"dropout": {"low": 0, "high": 2}}}},
                                        "scheduler.mutations.dropout.high: input should be less than 1"),
    "pb2_on_an_int": ({"scheduler": {"name": "pb2", "hyperparam_bounds": {"accum_steps": [1, 4]}}},
                      "scheduler.hyperparam_bounds.accum_steps: pb2 explores continuous values"),
    "pbt_with_nothing_to_mutate": ({"scheduler": {"name": "pbt"}, "search_space": {"optimizer": {"choices": ["sgd"]}}},
                                   "scheduler.mutations: pbt needs parameters to mutate"),
    "scheduler_with_optuna": ({"backend": "optuna", "scheduler": {"name": "asha"}},
                              "scheduler: only used with backend: ray (the optuna backend stops trials early with "
                              "`pruner:`)"),
    "several_objectives": ({"objective": {"metric": ["val_f1", "train_time"]}},
                           "objective.metric: Ray Tune's schedulers follow one metric"),
    "unknown_backend": ({"backend": "spark"}, "backend: input should be 'optuna' or 'ray' (got 'spark')"),
    "address_without_port": ({"ray": {"address": "head-node"}}, "ray.address: must be auto, ray://HOST:PORT (Ray "
                             "Client) or HOST:PORT (the head node) (got 'head-node')"),
    "address_port_too_high": ({"ray": {"address": "ray://head:70000"}}, "ray.address: must be auto"),
    "no_gpu": ({"resources": {"gpus_per_trial": 0}}, "resources.gpus_per_trial: input should be greater than 0"),
    "nine_gpus": ({"resources": {"gpus_per_trial": 9}}, "resources.gpus_per_trial: input should be less than or "
                  "equal to 8"),
    "no_cpu": ({"resources": {"cpus_per_trial": 0}}, "resources.cpus_per_trial: input should be greater than 0"),
    "folds": ({"data": {"folds": 3}}, "data.folds: backend: ray trains one split per trial"),
    "program_with_pbt": ({"objective": PROGRAM, "scheduler": {"name": "pbt"}},
                         "scheduler.name: pbt hands one trial's model to another as they train, which a program of "
                         "yours cannot do through tui-hpo: use asha, hyperband, median or fifo"),
    "program_asha_without_max_t": ({"objective": PROGRAM}, "scheduler.max_t: asha needs the most reports a trial of "
                                   "your program makes (its epochs, or steps): set scheduler.max_t"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_value_is_one_line_naming_its_key(case: str, tmp_path: Path) -> None:
    """Through the real command line (`tui-hpo validate`, in this process), file name first."""
    sections, message = BAD[case]
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps({**RAY, **sections}))  # JSON is YAML
    result = invoke("validate", str(path), "--workdir", str(tmp_path / "runs"))
    assert result.returncode == 2 and result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"tui-hpo: error: {path}: {message}"), result.stderr


def test_a_bad_scheduler_stops_run_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("train: {epochs: 2}\nscheduler: {name: asha, grace_perod: 1}\n")
    result = run_cli("run", "--config", str(path), "--backend", "ray", "--no-tui", "--workdir", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"tui-hpo: error: {path}: scheduler.grace_perod: unknown option of the "
                                          "asha scheduler (its options: grace_period, reduction_factor, max_t, "
                                          "brackets)"]
    assert not (tmp_path / "runs").exists()


def test_without_ray_a_ray_sweep_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ray_missing() is None, "the tests install the ray extra"
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray.tune` now fails as without the package
    assert ray_missing() == RAY_MISSING == "backend: ray needs Ray Tune: pip install 'tui-hpo[ray]'"
    monkeypatch.undo()
    no_ray = tmp_path / "no-ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError('not installed')\n")
    sweep = builtin_sweep(tmp_path)
    result = run_cli("validate", str(sweep), "--backend", "ray", "--workdir", str(tmp_path / "runs"),
                     env={"PYTHONPATH": str(no_ray.parent)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"tui-hpo: error: {sweep}: {RAY_MISSING}"]


def builtin_sweep(tmp_path: Path, **train: Any) -> Path:
    """A sweep of the built-in trainer on the embedded digits, its `train:` values `train`."""
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps({"train": {"model": "test_resnet", **train},
                                "search_space": {"lr": {"low": 0.001, "high": 0.1}}}))
    return path


def test_the_backend_comes_from_a_flag_or_the_environment(tmp_path: Path) -> None:
    assert resolve({}, environ={"TUI_HPO__BACKEND": "ray"}).scheduler == AshaConfig(max_t=resolve({}).train.epochs)
    result = invoke("validate", str(builtin_sweep(tmp_path, epochs=2)), "--backend", "ray", "--json",
                    "--workdir", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    came = {row["key"]: (row["value"], row["from"]) for row in json.loads(result.stdout)["settings"]}
    assert came["backend"] == ("ray", "command line") and came["scheduler.name"] == ("asha", "default")
    assert came["scheduler.max_t"][0] == came["train.epochs"][0], "a whole trial, as the data's defaults set it"
    assert came["ray.dashboard"] == (False, "default")


def test_each_section_builds_its_ray_scheduler_with_its_options() -> None:
    from ray import cloudpickle
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )
    from ray.tune.schedulers.pb2 import PB2
    from ray.tune.search.sample import Float, Integer

    asha = build(ray_config(scheduler={"grace_period": 2, "reduction_factor": 2, "brackets": 2}))
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "training_iteration"
    assert (asha._max_t, asha._reduction_factor, len(asha._brackets)) == (6, 2, 2)
    assert [m for m, _ in asha._brackets[0]._rungs] == [4, 2], "rungs from grace_period 2 to max_t 6"
    band = build(ray_config(scheduler={"name": "hyperband", "max_t": 9, "reduction_factor": 2}))
    assert isinstance(band, HyperBandScheduler) and (band._max_t_attr, band._eta) == (9, 2)
    median = build(ray_config(scheduler={"name": "median", "grace_period": 3, "min_samples_required": 5}))
    assert isinstance(median, MedianStoppingRule) and (median._grace_period, median._min_samples_required) == (3, 5)
    assert median._time_attr == "training_iteration" and median._metric is None, "Tune's TuneConfig sets the metric"
    assert isinstance(build(ray_config(scheduler={"name": "fifo"})), FIFOScheduler)

    pbt = build(ray_config(scheduler={"name": "pbt", "perturbation_interval": 3, "resample_probability": 0.5,
                                      "synch": True,
                                      "mutations": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                    "accum_steps": {"low": 1, "high": 4},
                                                    "optimizer": ["adamw", "sgd"]}}))
    assert isinstance(pbt, PopulationBasedTraining)
    assert (pbt._perturbation_interval, pbt._resample_probability, pbt._quantile_fraction) == (3, 0.5, 0.25)
    assert pbt._synch, "the whole population waits at each perturbation"
    lr, accum = pbt._hyperparam_mutations["lr"], pbt._hyperparam_mutations["accum_steps"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2) and type(lr.sampler).__name__ == "_LogUniform"
    assert isinstance(accum, Integer) and (accum.lower, accum.upper) == (1, 5), "Ray's upper bound is exclusive"
    assert pbt._hyperparam_mutations["optimizer"] == ["adamw", "sgd"]
    explored = pbt._custom_explore_fn({"lr": 0.012, "accum_steps": 0, "optimizer": "sgd"})
    assert explored == {"lr": 1e-2, "accum_steps": 1, "optimizer": "sgd"}, "perturbations kept in their range"
    assert cloudpickle.loads(cloudpickle.dumps(pbt))._perturbation_interval == 3, "it saves with the experiment"

    pb2 = build(ray_config(scheduler={"name": "pb2", "perturbation_interval": 4,
                                      "hyperparam_bounds": {"dropout": [0.1, 0.3]}}))
    assert isinstance(pb2, PB2) and pb2._hyperparam_bounds == {"dropout": [0.1, 0.3]}
    assert pb2._perturbation_interval == 4


def test_clip_keeps_ints_whole_and_leaves_other_keys_alone() -> None:
    clipped = clip({"accum_steps": (1.0, 4.0), "dropout": (0.0, 0.5)}, {"accum_steps": 6, "dropout": -0.1, "seed": 9})
    assert clipped == {"accum_steps": 4, "dropout": 0.0, "seed": 9} and isinstance(clipped["accum_steps"], int)


def test_a_resume_must_keep_the_backend_and_the_scheduler(tmp_path: Path) -> None:
    from engine.sweep.engine import create_or_resume

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    create_or_resume(ray_config(scheduler={"grace_period": 1}), url, "s", tmp_path)
    with pytest.raises(ConfigError, match=r"different 'scheduler' section \(scheduler.grace_period 1 -> 2\)"):
        create_or_resume(ray_config(scheduler={"grace_period": 2}), url, "s", tmp_path)
    with pytest.raises(ConfigError, match="different 'backend' section"):
        create_or_resume(validate({"train": {"epochs": 6}, "search_space": SPACE}, None), url, "s", tmp_path)


def test_the_json_schema_takes_every_form_of_the_section() -> None:
    import jsonschema

    schema = json.loads(invoke("schema").stdout)
    for config in ({"backend": "ray", "scheduler": {"grace_period": 2}, "ray": {"address": "auto"}},
                   {"backend": "ray", "scheduler": {"name": "pbt", "mutations": {"lr": [1e-3, 1e-2],
                                                                               "dropout": {"low": 0, "high": 0.5}}}},
                   {"backend": "ray", "scheduler": {"name": "pb2", "hyperparam_bounds": {"lr": [1e-4, 1e-2]}}},
                   {"resources": {"gpus_per_trial": 0.25, "cpus_per_trial": 2}}):
        jsonschema.validate(config, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"scheduler": {"name": "pbt", "grace_period": 2}}, schema)


def test_the_wizards_expert_tier_says_when_ray_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wizard asks a subprocess (Ray does not import under Textual), which finds no Ray here."""
    import asyncio

    from tui_hpo.app import make_app

    no_ray = tmp_path / "no-ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError('not installed')\n")
    monkeypatch.setenv("PYTHONPATH", str(no_ray.parent))
    listed_models(monkeypatch, tmp_path, ["test_resnet", "test_efficientnet", "test_convnext"])  # no timm import

    async def scenario() -> None:
        app = make_app(workdir=tmp_path, mode="wizard")
        async with app.run_test(size=(80, 24)) as pilot:
            wizard = app.screen
            check = wizard.query_one("#budget-check", Static)
            await wait_for(pilot, lambda: "ready" in text_of(check))
            wizard.query_one("#tier-expert", RadioButton).value = True
            await wait_for(pilot, lambda: RAY_MISSING in text_of(check), timeout=30)
            assert wizard.query_one("#start", Button).disabled
            assert wizard.layer()["backend"] == "ray" and wizard.layer()["scheduler"] == {"name": "asha"}
            # A model timm does not list: the message `tui-hpo run` gives, from the same list.
            typo = wizard.layer()
            typo.setdefault("search_space", {})["model"] = {"choices": ["test_resnet", "test_resnot"]}
            assert wizard.validate(typo) == ("search_space.model.choices[1]: unknown timm model 'test_resnot' "
                                             "(similar: test_resnet, test_efficientnet, test_convnext)")

    asyncio.run(scenario())



def test_a_cluster_nobody_answers_at_is_one_line_at_once(tmp_path: Path) -> None:
    """Ray itself retries an unreachable address for minutes, with warnings between the lines."""
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sweep = builtin_sweep(tmp_path)
    result = run_cli("run", "--config", str(sweep), "--backend", "ray", "--no-tui", "--workdir", str(tmp_path / "runs"),
                     env={"TUI_HPO__RAY__ADDRESS": f"127.0.0.1:{port}"}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"tui-hpo: error: ray.address: cannot join the Ray cluster at "
                                          f"127.0.0.1:{port}: Connection refused"]
