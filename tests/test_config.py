"""Config layering and the three formats, mapped onto one internal spec."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.command.argv import check_command
from engine.config import (
    SweepConfig,
    apply_batch_multiplier,
    canonical_metric,
    env_layer,
    flags_layer,
    resolve,
    study_name,
)
from engine.config.space import canonical_param
from engine.errors import ConfigError
from engine.system.platform import PlatformInfo, profile


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_presets_resolve_on_every_platform() -> None:
    for preset in ("quick", "full"):
        for platform in ("cpu", "cuda", "mps"):
            config = resolve({}, preset=preset, environ={}, platform=platform)
            assert config.search_space and config.budget.n_trials > 0
    full_cpu = resolve({}, preset="full", environ={}, platform="cpu")
    full_cuda = resolve({}, preset="full", environ={}, platform="cuda")
    assert "test_vit" in full_cpu.models() and "resnet50" in full_cuda.models()
    for preset in ("quick", "compare", "full"):  # Apple silicon trains real small models, not the test ones
        assert "resnet18" in resolve({}, preset=preset, environ={}, platform="mps").models()
    assert full_cpu.budget.n_trials == 50 and full_cpu.train.epochs == 8  # extends quick, overrides


def test_layers_order_profile_preset_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "extends: quick\ntrain: {epochs: 7, lr: 0.01}\nresources: {parallel: 3}\n")
    layer = {"resources": {"parallel": 1, "amp": "bf16"}, "train": {"epochs": 99}}
    env = {"TUI_HPO__TRAIN__LR": "1e-4", "TUI_HPO__BUDGET__N_TRIALS": "11"}
    config = resolve(layer, config_file=path, environ=env, flags=flags_layer(n_trials=5), platform="cpu")
    assert config.train.epochs == 7  # file beats profile
    assert config.resources.amp == "bf16"  # profile fills what nobody set
    assert config.resources.parallel == 3
    assert config.train.lr == pytest.approx(1e-4)  # environment beats file
    assert config.budget.n_trials == 5  # flags beat environment
    assert config.name == "sweep"


def test_env_scheme_and_aliases() -> None:
    layer = env_layer({"TUI_HPO__TRAIN__LEARNING_RATE": "0.5", "TUI_HPO__DATA__FOLDS": "3", "OTHER": "x"})
    assert layer == {"train": {"lr": 0.5}, "data": {"folds": 3}}


def test_native_aliases_and_conditional_space(tmp_path: Path) -> None:
    path = write(tmp_path, """
train: {num_train_epochs: 2, per_device_train_batch_size: 32}
search_space:
  learning_rate: {type: loguniform, low: 1e-4, high: 1e-2}
  optimizer: {choices: [adamw, sgd]}
  momentum: {low: 0.8, high: 0.99, when: {optimizer: sgd}}
  gradient_accumulation_steps: {low: 1, high: 4}
""")
    config = resolve({}, config_file=path, environ={})
    assert config.train.epochs == 2 and config.train.batch_size == 32
    assert set(config.search_space) == {"lr", "optimizer", "momentum", "accum_steps"}
    assert config.search_space["lr"].is_log() and config.search_space["accum_steps"].kind() == "int"


def test_wandb_sweep_file(tmp_path: Path) -> None:
    """Without a program, a W&B file tunes the built-in trainer: its parameters by their names there."""
    path = write(tmp_path, """
method: bayes
metric: {name: eval/f1, goal: maximize}
parameters:
  learning_rate: {distribution: log_uniform_values, min: 1e-5, max: 1e-3}
  per_device_train_batch_size: {values: [16, 32]}
  num_train_epochs: {value: 2}
  warmup_ratio: {distribution: uniform, min: 0.0, max: 0.2}
  gradient_accumulation_steps: {distribution: int_uniform, min: 1, max: 4}
  weight_decay: {distribution: q_uniform, min: 0.0, max: 0.1, q: 0.01}
  dropout: {distribution: normal, mu: 0.1, sigma: 0.02}
early_terminate: {type: hyperband, min_iter: 1, eta: 2}
""")
    config = resolve({}, config_file=path, environ={})
    assert config.sampler.name == "tpe"
    assert config.objective.metric == "val_f1" and config.objective.directions() == ["maximize"]
    assert config.train.epochs == 2
    space = config.search_space
    assert space["lr"].is_log() and space["lr"].low == pytest.approx(1e-5)
    assert space["batch_size"].choices == [16, 32]
    assert space["accum_steps"].kind() == "int"
    assert space["weight_decay"].step == pytest.approx(0.01)
    assert space["dropout"].low == pytest.approx(0.04) and space["dropout"].high == pytest.approx(0.16)
    assert config.pruner.name == "hyperband" and config.pruner.options == {"reduction_factor": 2, "min_resource": 1}


def test_wandb_grid_and_random(tmp_path: Path) -> None:
    grid = resolve({}, config_file=write(tmp_path, "method: grid\nparameters:\n  lr: {values: [0.001, 0.01]}\n"),
                   environ={})
    assert grid.sampler.name == "grid" and grid.pruner.name == "none"
    rnd = resolve({}, config_file=write(tmp_path, "method: random\nrun_cap: 7\nparameters:\n"
                                        "  lr: {min: 0.001, max: 0.01}\n", "r.yaml"), environ={})
    assert rnd.sampler.name == "random" and rnd.budget.n_trials == 7 and rnd.search_space["lr"].kind() == "float"


def test_optuna_guide_layout(tmp_path: Path) -> None:
    path = write(tmp_path, """
optuna:
  n_trials: 30
  timeout: 7200
  pruning: {enabled: true, patience: 3}
search_space:
  learning_rate: {low: 5.0e-5, high: 5.0e-3}
  batch_size: {choices: [32, 64, 128]}
  advanced_params:
    label_smoothing: {type: "uniform", low: 0.0, high: 0.2}
quick_validation: {epochs: 2, folds: 2, batch_size_override: 64}
""")
    config = resolve({}, config_file=path, environ={})
    assert config.budget.n_trials == 30 and config.budget.timeout == 7200
    assert config.pruner.name == "median" and config.pruner.patience == 3
    assert config.train.epochs == 2 and config.data.folds == 2
    assert set(config.search_space) == {"lr", "batch_size", "label_smoothing"}
    assert config.search_space["batch_size"].choices == [32, 64]


def test_metric_names() -> None:
    assert canonical_metric("eval/f1") == "val_f1"
    assert canonical_metric("val/accuracy") == "val_accuracy"
    assert canonical_metric("eval/loss") == "val_loss"
    assert canonical_metric("val_acc") == "val_accuracy"
    assert canonical_metric("train/loss") == "train_loss"


def test_multi_objective(tmp_path: Path) -> None:
    path = write(tmp_path, "extends: quick\nobjective: {metric: [val_f1, train_time]}\nsampler: {name: nsga2}\n"
                           "pruner: {name: none}\n")
    config = resolve({}, config_file=path, environ={})
    assert config.objective.directions() == ["maximize", "minimize"]


def fake_info(gpus: list[tuple[str, bool]] | None = None, mps: bool = False, memory_gb: float = 40) -> PlatformInfo:
    from engine.system.platform import GpuInfo

    gpu_list = [GpuInfo(index=i, name=n, total_mb=memory_gb * 1024, free_mb=memory_gb * 1000,
                        compute_capability="8.0" if bf16 else "7.0", bf16=bf16)
                for i, (n, bf16) in enumerate(gpus or [])]
    return PlatformInfo(os="Linux", hostname="h", python="3.11", versions={}, cpu_model="cpu", physical_cores=8,
                        logical_cores=8, ram_total_gb=32, ram_available_gb=30, cuda_available=bool(gpu_list),
                        cuda_version="12", driver_version="550", gpus=gpu_list, mps_available=mps,
                        platform="cuda" if gpu_list else ("mps" if mps else "cpu"))


def test_profiles() -> None:
    cuda = profile(fake_info([("A100", True), ("A100", True)]), "cuda")["resources"]
    assert cuda == {"amp": "bf16", "compile": "auto", "channels_last": True, "pin_memory": True,
                    "batch_multiplier": 1.5, "parallel": 2, "trials_per_gpu": "auto"}
    assert profile(fake_info([("V100", False)]), "cuda")["resources"]["amp"] == "fp16"
    # The batch and the packing scale with the card's memory (the smallest card's, with several).
    by_memory = {gb: profile(fake_info([("card", True)], memory_gb=gb), "cuda")["resources"] for gb in (10, 24, 141)}
    assert [by_memory[gb]["batch_multiplier"] for gb in (10, 24, 141)] == [0.5, 1.0, 2.0]
    assert by_memory[10]["trials_per_gpu"] == 1 and by_memory[141]["trials_per_gpu"] == "auto"
    asked = profile(fake_info([("A100", True)] * 2), "cuda", trials_per_gpu=3)["resources"]
    assert asked["parallel"] == 6 and asked["trials_per_gpu"] == 3, "a number asked for is kept: no packing"
    mps = profile(fake_info(mps=True), "mps")["resources"]
    assert mps["amp"] == "off" and mps["pin_memory"] is False and mps["batch_multiplier"] == 0.8
    assert mps["parallel"] == 1
    cpu = profile(fake_info(), "cpu")["resources"]
    assert cpu["batch_multiplier"] == 0.5 and cpu["parallel"] == 4


def test_batch_multiplier_applied_once() -> None:
    config = resolve(profile(fake_info(), "cpu"), preset="quick", environ={}, platform="cpu")
    assert apply_batch_multiplier(config) == 0.5
    assert config.search_space["batch_size"].choices == [32, 64]
    assert config.resources.batch_multiplier == 1.0
    again = SweepConfig.model_validate(config.to_dict())
    assert apply_batch_multiplier(again) == 1.0 and again.search_space["batch_size"].choices == [32, 64]
    per_model = SweepConfig.model_validate({
        "resources": {"batch_multiplier": 0.5},
        "search_space": {"model": {"choices": ["test_resnet", "test_vit"]},
                         "batch_size": {"choices": [64, 128], "by": {"model": {"test_vit": {"choices": [16, 32]}}}}}})
    apply_batch_multiplier(per_model)  # each model's own batch sizes are scaled too
    assert per_model.search_space["batch_size"].by["model"]["test_vit"].choices == [8, 16]


def test_unknown_key_names_path(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"sweep.yaml: train.lrr: unknown key 'lrr'"):
        resolve({}, config_file=path, environ={})


def test_a_wandb_display_name_names_the_study_by_a_slug(tmp_path: Path) -> None:
    """W&B's `name:` is free text: it becomes the description, and a slug of it the study name."""
    path = write(tmp_path, 'name: "ResNet sweep 2/3: lr + wd"\nmethod: random\nparameters:\n'
                           "  lr: {min: 0.001, max: 0.01}\n", "wb.yaml")
    config = resolve({}, config_file=path, environ={})
    assert config.name == "ResNet-sweep-2-3-lr-wd"
    assert config.description == "ResNet sweep 2/3: lr + wd"
    nothing_to_slug = write(tmp_path, 'name: "???"\nmethod: random\nparameters:\n  lr: {min: 0.001, max: 0.01}\n',
                            "my sweep.yaml")
    assert resolve({}, config_file=nothing_to_slug, environ={}).name == "my-sweep"  # the file names it
    guide = write(tmp_path, "optuna: {study_name: 'cnn study / v2', n_trials: 3}\nsearch_space:\n"
                            "  lr: {low: 0.001, high: 0.01}\n", "guide.yaml")
    config = resolve({}, config_file=guide, environ={})
    assert (config.name, config.description) == ("cnn-study-v2", "cnn study / v2")


def test_wandb_distributions_on_natural_log_bounds_and_the_keys_read_as_notes(tmp_path: Path) -> None:
    """W&B's log_uniform, q_log_uniform and inv_log_uniform take natural logs as bounds, its
    normals are searched within +-3 sigma; its own keys and what Optuna cannot honour are notes."""
    path = write(tmp_path, """
project: cifar
entity: team
controller: {type: local}
method: bayes
metric: {name: val_f1, goal: maximize, target: 0.99}
parameters:
  lr: {distribution: log_uniform, min: -9.210340371976182, max: -4.605170185988091}
  weight_decay: {distribution: inv_log_uniform, min: 2.302585092994046, max: 9.210340371976182}
  batch_size: {distribution: q_log_uniform, min: 2.772588722239781, max: 4.852030263919617, q: 1}
  dropout: {distribution: q_normal, mu: 0.3, sigma: 0.05, q: 0.01}
  label_smoothing: {distribution: log_normal, mu: -3.0, sigma: 0.5}
  optimizer: {values: [adamw, sgd], probabilities: [0.7, 0.3]}
""", "wb.yaml")
    config = resolve({}, config_file=path, environ={})
    space = config.search_space
    assert (space["lr"].low, space["lr"].high) == (pytest.approx(1e-4), pytest.approx(1e-2)) and space["lr"].is_log()
    assert (space["weight_decay"].low, space["weight_decay"].high) == (pytest.approx(1e-4), pytest.approx(0.1))
    assert space["batch_size"].kind() == "int" and (space["batch_size"].low, space["batch_size"].high) == (16, 128)
    assert space["dropout"].step == 0.01 and space["dropout"].low == pytest.approx(0.15)
    assert space["label_smoothing"].is_log() and space["label_smoothing"].high == pytest.approx(math.exp(-1.5))
    assert space["optimizer"].choices == ["adamw", "sgd"]
    assert config.notes == [
        "W&B's project ('cifar') is not used here", "W&B's entity ('team') is not used here",
        "W&B's controller ({'type': 'local'}) is not used here",
        "metric.target (0.99) does not stop the sweep here: n_trials and budget.timeout do",
        "parameters.optimizer.probabilities: the samplers here pick each value alike"]
    assert resolve({}, environ={}).notes == [], "a native config has none"
    nested = write(tmp_path, "method: random\nparameters:\n  optimizer:\n    parameters:\n"
                             "      learning_rate: {min: 0.001, max: 0.01}\n      weight_decay: {value: 0.02}\n",
                   "nested.yaml")
    config = resolve({}, config_file=nested, environ={})
    assert config.search_space["lr"].high == 0.01 and config.train.weight_decay == 0.02
    clash = write(tmp_path, "method: random\nparameters:\n  lr: {value: 0.1}\n  optimizer:\n    parameters:\n"
                            "      learning_rate: {min: 0.001, max: 0.01}\n", "clash.yaml")
    with pytest.raises(ConfigError, match="sets 'lr' again") as error:
        resolve({}, config_file=clash, environ={})
    assert error.value.key == "parameters.optimizer.parameters.learning_rate"


def test_one_rule_names_the_study(tmp_path: Path) -> None:
    """--study, else the config's name:, else its file name, else the preset; the file that was
    run names the study even when a preset is layered under it."""
    named = write(tmp_path, "name: foo\ntrain: {epochs: 1}\n", "x.yaml")
    unnamed = write(tmp_path, "train: {epochs: 1}\n", "y.yaml")
    assert study_name(None, resolve({}, config_file=named, environ={}).name) == "foo"
    assert study_name(None, resolve({}, config_file=unnamed, environ={}).name) == "y"
    assert study_name(None, resolve({}, preset="quick", config_file=unnamed, environ={}).name) == "y"
    assert study_name(None, resolve({}, preset="full", environ={}).name) == "full"
    assert study_name("mine", resolve({}, config_file=named, environ={}).name) == "mine"
    with pytest.raises(ConfigError, match="--study: study name 'a/b' contains a path separator"):
        study_name("a/b", "foo")
    with pytest.raises(ConfigError, match=r"study name '.cache' starts with '.' \(DIR/.<name>/ holds the"):
        study_name(".cache", "foo")


def test_run_names_the_study_the_same_way_headless_and_in_the_app(tmp_path: Path, monkeypatch) -> None:
    """`tui-hpo run --config x.yaml` (holding `name: foo`) watches and starts study `foo` from a
    terminal, as it runs `foo` headless."""
    from engine.storage import Workspace
    from tui_hpo import app, cli, launch

    config = write(tmp_path, "name: foo\ntrain: {epochs: 1}\n", "x.yaml")
    started: dict[str, object] = {}

    class Watcher:
        return_code = 0

        def run(self) -> None:
            pass

    def fake_start(args: launch.RunArgs, workspace: Workspace, study: str) -> object:
        started.update(args=args, study=study)
        return object()

    def fake_app(workdir: object, storage: object, **kwargs: object) -> Watcher:
        started["watched"] = kwargs["study"]
        return Watcher()

    monkeypatch.setattr(launch, "start_engine", fake_start)
    monkeypatch.setattr(app, "make_app", fake_app)
    args = launch.RunArgs(config_file=config)
    assert cli._run_in_app(args, Workspace(tmp_path / "runs"), None) == 0
    assert started["study"] == started["watched"] == "foo"
    assert cli._resolve_name(args, Workspace(tmp_path / "runs"), None)[1] == "foo"  # the headless path's name
    assert "--config" in launch.RunArgs(config_file=config).argv() and "x.yaml" in " ".join(started["args"].argv())


@pytest.mark.parametrize(("layer", "message"), [
    ({"resources": {"trials_per_gpu": "many"}},
     "resources.trials_per_gpu: input should be a valid integer or 'auto' (got 'many')"),
    ({"resources": {"trials_per_gpu": 0}},
     "resources.trials_per_gpu: input should be greater than or equal to 1 or 'auto' (got 0)"),
    ({"resources": {"compile": "maybe"}}, "resources.compile: input should be a valid boolean or 'auto' (got 'maybe')"),
])
def test_a_value_of_none_of_a_keys_types_names_the_key_and_what_it_takes(layer: dict, message: str) -> None:
    """pydantic tags each branch of a union in the error's location ("constrained-int"): the line
    names the key the user wrote, and what each branch would take."""
    from engine.config.schema import validate

    with pytest.raises(ConfigError) as raised:
        validate(layer, "x.yaml")
    assert str(raised.value).endswith(message), str(raised.value)
    assert "constrained" not in str(raised.value) and "literal[" not in str(raised.value)


@pytest.mark.parametrize(("spec", "message"), [
    ({"lr": {"low": 1e-4, "high": 1e-2, "by": {"model": {"test_vit": {"choices": [1e-3]}}}}},
     "search_space.lr.by.model.test_vit.choices: a case of a float parameter takes low/high/step, not 'choices'"),
    ({"batch_size": {"choices": [64], "by": {"model": {"test_vit": {"choices": [16, 0]}}}}},
     "search_space.batch_size.by.model.test_vit.choices[1]: input should be greater than or equal to 1 (got 0)"),
    ({"batch_size": {"choices": [64], "by": {"model": {"test_vit": {"low": 8, "high": 32}}}}},
     "search_space.batch_size.by.model.test_vit: a case of a categorical parameter takes 'choices', not low/high"),
    ({"batch_size": {"choices": [64], "by": {"model": {"test_vit": {"choices": []}}}}},
     "search_space.batch_size.by.model.test_vit.choices: is empty"),
])
def test_a_bad_by_case_names_its_key_path(spec: dict, message: str) -> None:
    from engine.config.schema import validate

    layer = {"search_space": {"model": {"choices": ["test_resnet", "test_vit"]}, **spec}}
    with pytest.raises(ConfigError) as raised:
        validate(layer, "x.yaml")
    assert str(raised.value).startswith(f"x.yaml: {message}"), str(raised.value)


def test_a_per_model_recipe_is_a_valid_config() -> None:
    """Categorical `by` (refused before: one choice list per name in a study) loads, grid included."""
    from engine.config.schema import validate

    config = validate({"sampler": {"name": "grid"}, "search_space": {
        "model": {"choices": ["test_resnet", "test_vit"]},
        "batch_size": {"choices": [64, 128], "by": {"model": {"test_vit": {"choices": [16, 32]}}}}}}, None)
    assert config.search_space["batch_size"].by["model"]["test_vit"].choices == [16, 32]


def test_presets_switch_to_fine_tuning_ranges_when_weights_are_given(tmp_path: Path) -> None:
    """A pretrained start wants smaller learning rates and a longer warm-up: the presets'
    `when_finetuning` blocks apply when any layer sets `train.weights`, and a file's own range
    still wins over them."""
    scratch = resolve({}, preset="quick", environ={}, platform="cpu")
    assert scratch.search_space["lr"].low == 3.0e-4 and scratch.train.warmup_ratio == 0.05
    weights = {"train": {"weights": str(tmp_path / "model.pth")}}
    tuned = resolve({}, preset="quick", environ={}, flags=weights, platform="cpu")
    assert (tuned.search_space["lr"].low, tuned.search_space["lr"].high) == (1.0e-5, 1.0e-3)
    assert tuned.train.warmup_ratio == 0.1
    full = resolve({}, preset="full", environ={}, flags=weights, platform="cpu")
    assert full.search_space["lr"].by["model"]["test_vit"].high == 3.0e-4  # full's own block, over quick's
    own = tmp_path / "own.yaml"
    own.write_text("extends: quick\nsearch_space:\n  lr: {low: 1.0e-6, high: 1.0e-4, log: true}\n")
    mine = resolve({}, config_file=str(own), environ={}, flags=weights, platform="cpu")
    assert mine.search_space["lr"].low == 1.0e-6
    bad = tmp_path / "bad.yaml"
    bad.write_text("when_finetuning: {train: {lr: -1}}\n")
    with pytest.raises(ConfigError, match=r"when_finetuning\.train\.lr"):
        resolve({}, config_file=str(bad), environ={}, platform="cpu")  # checked even when not fine-tuning


def test_the_seed_scripts_environment_variables_fix_their_parameters() -> None:
    """SEED, LEARNING_RATE, BATCH_SIZE, EPOCHS, as the origin documents' scripts read them: each
    fixes its parameter (out of the search space); TUI_HPO__TRAIN__* wins over them."""
    config = resolve({}, environ={"SEED": "7", "LEARNING_RATE": "2e-3", "EPOCHS": "3", "BATCH_SIZE": "16"})
    train = config.train
    assert (train.seed, train.lr, train.epochs, train.batch_size) == (7, 0.002, 3, 16)
    assert "lr" not in config.search_space and "batch_size" not in config.search_space
    assert train.min_steps is None and train.max_steps is None, "EPOCHS means that many epochs"
    assert "weight_decay" in config.search_space, "the others are still searched"
    assert resolve({}, environ={"LEARNING_RATE": "0.01", "TUI_HPO__TRAIN__LR": "0.02"}).train.lr == 0.02
    with pytest.raises(ConfigError) as error:
        resolve({}, environ={"EPOCHS": "many"})
    assert error.value.source == "environment" and error.value.key == "train.epochs"



def test_the_seed_scripts_variables_work_with_a_config_that_has_no_search_space(tmp_path: Path) -> None:
    """A file without `search_space:` left the variables' "not searched" marks (nulls) with
    nothing to remove, and the config was refused for a value the user never wrote."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("train: {epochs: 1}\nbudget: {n_trials: 1}\n")
    config = resolve({}, config_file=str(plain), environ={"SEED": "5", "LEARNING_RATE": "0.01"})
    assert (config.train.seed, config.train.lr, config.search_space) == (5, 0.01, {})


def test_validate_says_where_each_value_came_from_and_writes_nothing(tmp_path: Path) -> None:
    """`tui-hpo validate`: `run`'s checks and resolution without running; each setting named with
    the layer that set it last (file, environment, command line, profile, the data, default)."""
    import json

    from tests.conftest import ROOT, run_cli

    path = write(tmp_path, f"extends: {ROOT / 'tests/configs/tiny.yaml'}\ntrain: {{lr: 0.004, augment: auto}}\n"
                           "sampler: {name: grid}\nsearch_space:\n  lr: {choices: [0.001, 0.01]}\n"
                           "  batch_size: {choices: [32, 64]}\n")
    workdir = tmp_path / "runs"
    result = run_cli("validate", path, "--n-trials", "7", "--workdir", str(workdir), "--json",
                     env={"TUI_HPO__TRAIN__EPOCHS": "3"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    came = {row["key"]: (row["value"], row["from"]) for row in report["settings"]}
    assert came["train.lr"] == (0.004, "sweep.yaml") and came["train.epochs"] == (3, "environment")
    assert came["budget.n_trials"] == (4, "command line"), "7 asked, capped at the grid's 4 points"
    assert came["resources.amp"][1] == "platform profile" and came["train.seed"] == (0, "default")
    assert came["train.augment"] == (0.0, 'the data (was "auto")'), "digits are glyphs: no augmentation"
    assert report["grid_points"] == 4 and report["trials"] == 4 and report["estimate"] is None
    assert report["data"]["train"] == 1438 and report["objective"]["directions"] == ["maximize"]
    assert "the grid has 4 points: n_trials capped at 4" in report["notes"]
    assert not workdir.exists(), "a dry run writes nothing"
    shown = run_cli("validate", path, "--workdir", str(workdir))
    assert shown.returncode == 0 and "sweep.yaml is valid: study 'sweep' on cpu" in shown.stdout
    assert "no estimate yet" in " ".join(shown.stdout.split())
    broken = write(tmp_path, "train: {lr: -1}\n", "broken.yaml")
    bad = run_cli("validate", broken, "--workdir", str(workdir))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"tui-hpo: error: {broken}: train.lr: input should be greater than 0 (got -1)"], bad.stderr
    assert not workdir.exists()


def test_the_schema_accepts_every_preset_and_names_what_is_wrong(tmp_path: Path) -> None:
    import json

    import jsonschema
    import yaml
    from click.testing import CliRunner

    from engine.config.presets import PRESET_DIR
    from tui_hpo.cli import main

    out = tmp_path / "tui-hpo.schema.json"
    assert CliRunner().invoke(main, ["schema", "--out", str(out)]).exit_code == 0
    checker = jsonschema.Draft202012Validator(json.loads(out.read_text()))
    for preset in sorted(PRESET_DIR.glob("*.yaml")):
        assert not list(checker.iter_errors(yaml.safe_load(preset.read_text()))), preset.name
    wrong = {"train": {"lr": "fast"}, "budget": {"n_trials": 0}, "per_platform": {"tpu": {}}, "nope": 1}
    assert len(list(checker.iter_errors(wrong))) == 4
    program = {"objective": {"command": ["python", "train.py"], "metric": "bleu", "direction": "maximize"},
               "train": {"hidden_size": 256, "lr": "fast"}}  # a program's own values, by its names
    assert not list(checker.iter_errors(program))
    assert len(list(checker.iter_errors({"train": {"hidden_size": 256}}))) == 1, "the trainer's keys are checked"


REAL_WANDB = sorted((Path(__file__).parent / "configs" / "wandb_real").glob("*.yaml"))
# Files W&B itself would reject, for the reasons named (see configs/wandb_real/SOURCES.md).
W_AND_B_REJECTS = {
    "12_brain-age-gnn.yaml": "parameters.similarity: unknown key 'layer_sizes'",  # two parameters indented too far
    "15_platalea-speech.yaml": "metric.goal: must be maximize or minimize",
}


@pytest.mark.parametrize("path", REAL_WANDB, ids=lambda p: p.stem)
def test_real_wandb_sweep_files_read_as_wandb_reads_them(path: Path) -> None:
    """The yardstick of the W&B reader: sweep files from public repositories, kept verbatim.
    Each valid one translates (its own program's parameter names are checked later, against
    what trains them); the ones W&B would reject get the usual one line."""
    from engine.config import read_yaml_file, to_native
    from engine.config.formats import translate_wandb

    raw = read_yaml_file(path)
    if path.name in W_AND_B_REJECTS:
        with pytest.raises(ConfigError) as error:
            to_native(raw, str(path))
        assert f"{error.value.key}: {error.value.detail}".startswith(W_AND_B_REJECTS[path.name])
        return
    native, foreign = translate_wandb(raw, str(path))
    if "program" not in raw and "command" not in raw:  # the built-in trainer's: its names, else one line
        declared = [k for k, v in raw["parameters"].items() if not (isinstance(v, dict) and "parameters" in v)]
        assert set(native["search_space"]) | set(native.get("train", {})) >= {canonical_param(str(k)) for k in declared}
        if foreign:
            with pytest.raises(ConfigError) as error:
                to_native(raw, str(path))
            assert error.value.key == foreign[0][0] and error.value.key.startswith("parameters.")
            assert "is not a parameter of tui-hpo's trainer" in error.value.detail
        return
    # A program's file validates whole, as W&B would run it: every parameter under its own
    # (dotted, for nested groups) name, the command with its macros, the metric as the program names it
    assert not foreign
    config = resolve({}, config_file=path, environ={})
    assert config.runs_command and config.objective.cwd is None  # resolve_run makes it the file's folder
    leaves = _wandb_names(raw["parameters"])
    assert set(config.search_space) | set(config.params) == set(leaves), "no parameter renamed, none lost"
    assert config.objective.metrics() == [raw["metric"]["name"]] if "metric" in raw else True
    check_command(config.objective.command or [])
    assert "${program}" not in " ".join(config.objective.command or [])


def _wandb_names(params: dict, prefix: str = "") -> list[str]:
    names = []
    for name, spec in params.items():
        if isinstance(spec, dict) and "parameters" in spec:
            names += _wandb_names(spec["parameters"], f"{prefix}{name}.")
        else:
            names.append(f"{prefix}{name}")
    return names


def test_the_real_files_cover_what_users_write() -> None:
    """The set holds what the reader must handle: each method, nested groups, W&B's own keys,
    log bounds, hyperband, command macros."""
    text = "\n".join(p.read_text() for p in REAL_WANDB)
    for feature in ("method: grid", "method: random", "method: bayes", "log_uniform_values", "distribution: "
                    "log_uniform\n", "int_uniform", "q_uniform", "early_terminate", "${args_no_hyphens}",
                    "${interpreter}", "run_cap", "entity"):
        assert feature in text, feature
    assert len(REAL_WANDB) >= 20
