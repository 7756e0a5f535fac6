"""Every kind of bad input: one line naming file/key/path, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli, write_png

CASES = {
    "yaml_syntax": ("train: {epochs: 3\n", [], "invalid YAML"),
    "unknown_key": ("train:\n  epochz: 3\n", [], "train.epochz: unknown key 'epochz'"),
    "wrong_type": ("train:\n  epochs: three\n", [], "train.epochs: input should be a valid integer"),
    "low_ge_high": ("search_space:\n  lr: {low: 0.1, high: 0.01}\n", [], "search_space.lr.low: must be < high"),
    "log_nonpositive": ("search_space:\n  lr: {low: 0, high: 0.1, log: true}\n", [],
                        "search_space.lr.low: must be > 0 for a log range"),
    "empty_choices": ("search_space:\n  batch_size: {choices: []}\n", [], "search_space.batch_size.choices: is empty"),
    "unknown_param": ("search_space:\n  learning_rat: {low: 0.1, high: 1.0}\n", [],
                      "search_space.learning_rat: unknown parameter"),
    "unknown_sampler": ("sampler: {name: bayesian}\n", [], "sampler.name: unknown sampler 'bayesian'"),
    "unknown_pruner": ("pruner: {name: asha}\n", [], "pruner.name: unknown pruner 'asha'"),
    "unknown_metric": ("objective: {metric: val_auc}\n", [], "objective.metric: unknown metric 'val_auc'"),
    "bad_choice_value": ("search_space:\n  optimizer: {choices: [adamw, lion]}\n", [],
                         "search_space.optimizer.choices[1]"),
    "non_positive_budget": ("budget: {n_trials: 0}\n", [], "budget.n_trials: input should be greater than"),
    "negative_timeout": ("budget: {timeout: -5}\n", [], "budget.timeout"),
    "zero_parallel_flag": ("{}\n", ["--parallel", "0"], "resources.parallel"),
    "zero_trials_flag": ("{}\n", ["--n-trials", "0"], "budget.n_trials"),
    "unsafe_tag": ("train: !!python/object/apply:os.system ['echo pwned']\n", [], "unsafe or unknown YAML tag"),
    "top_level_list": ("- 1\n- 2\n", [], "the top level must be a mapping"),
    "unknown_model": ("train: {model: resnet_does_not_exist}\n", [], "train.model: unknown timm model"),
    "unknown_model_choice": ("search_space:\n  model: {choices: [test_resnet, nope_net]}\n", [],
                             "search_space.model.choices[1]: unknown timm model 'nope_net'"),
    "wilcoxon_without_folds": ("pruner: {name: wilcoxon}\n", [], "pruner.name: the wilcoxon pruner compares folds"),
    "bad_sampler_option": ("sampler: {name: tpe, options: {n_startup: 3}}\n", [], "sampler.options"),
    "grid_on_continuous": ("sampler: {name: grid}\nsearch_space:\n  lr: {low: 0.001, high: 0.1}\n", [],
                           "search_space.lr: the grid sampler needs"),
    "wandb_bad_distribution": ("method: bayes\nparameters:\n  lr: {distribution: beta, min: 0, max: 1}\n", [],
                               "parameters.lr.distribution: unknown distribution 'beta'"),
    "wandb_log_bounds_as_values": ("method: bayes\nparameters:\n  lr: {distribution: log_uniform, min: 1, max: 1000}\n",
                                   [], "parameters.lr: e**1000 is too large: W&B's log distributions take natural"),
    "guide_unknown_key": ("optuna:\n  n_trails: 5\n", [], "optuna.n_trails: unknown key"),
    "empty_file": ("", [], "is empty"),
    "comments_only": ("# the settings will go here\n", [], "is empty"),
    # A flag for the same key must not hide a broken file: each layer is checked on its own.
    "bad_value_under_a_flag": ("budget: {n_trials: -5}\n", ["--n-trials", "1"], "budget.n_trials"),
    "bad_type_under_a_flag": ("resources: {parallel: many}\n", ["--parallel", "1"], "resources.parallel"),
    "broken_block_of_another_platform": ("per_platform:\n  cuda: {train: {epochs: 0}}\n", [],
                                         "per_platform.cuda.train.epochs"),
    "condition_cycle": ("search_space:\n  lr: {low: 0.001, high: 0.1, when: {dropout: 0.1}}\n"
                        "  dropout: {choices: [0.1], when: {lr: 0.01}}\n", [], "conditions form a cycle"),
}


def assert_clean_failure(result, workdir: Path, *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tui-hpo: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (workdir / "hpo.db").exists(), "a study was created"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config(case: str, tmp_path: Path) -> None:
    text, extra, needle = CASES[case]
    config = tmp_path / f"{case}.yaml"
    config.write_text(text)
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--workdir", str(workdir), "--no-tui", *extra)
    assert_clean_failure(result, workdir, needle, str(config) if "flag" not in case else "")


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "nope.yaml"), "--workdir", str(tmp_path / "runs"))
    assert_clean_failure(result, tmp_path / "runs", "nope.yaml: no such config file")


def test_unknown_preset(tmp_path: Path) -> None:
    result = run_cli("run", "--preset", "fast", "--workdir", str(tmp_path / "runs"))
    assert_clean_failure(result, tmp_path / "runs", "preset: unknown preset 'fast' (known: ")


def test_bad_environment_value(tmp_path: Path) -> None:
    result = run_cli("run", "--workdir", str(tmp_path / "runs"), env={"TUI_HPO__TRAIN__EPOCHS": "many"})
    assert_clean_failure(result, tmp_path / "runs", "train.epochs")


def test_missing_data_path(tmp_path: Path) -> None:
    result = run_cli("run", "--data", str(tmp_path / "absent"), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert_clean_failure(result, tmp_path / "runs", "absent: data.path: no such file or folder")


def test_empty_data_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir(parents=True)
    (tmp_path / "data" / "dogs" / "broken.png").write_bytes(b"")
    result = run_cli("run", "--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert_clean_failure(result, tmp_path / "runs", "data.path: no usable images found", "broken.png (empty)")


def test_one_class_only(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "data" / "cats" / f"{i}.png", 100)
    result = run_cli("run", "--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert_clean_failure(result, tmp_path / "runs", "only one class with images (cats)")


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", "--n-trials", "many")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'many' is not a valid integer" in result.stderr


def test_model_kwargs_are_checked_before_the_study(tmp_path: Path) -> None:
    config = tmp_path / "kwargs.yaml"
    config.write_text("train: {model: test_resnet, model_kwargs: {no_such_argument: 1}}\n")
    result = run_cli("run", "--config", str(config), "--workdir", str(tmp_path / "runs"), "--no-tui")
    assert_clean_failure(result, tmp_path / "runs", "train.model_kwargs: model 'test_resnet' cannot be built")


@pytest.mark.parametrize(("flags", "needle"), [
    ([], "labels.csv: data.id_column: several columns could hold the image ids (file, path); columns: file, path, "
         "label; set data.id_column in the config or --id-column"),
    (["--id-column", "nope"], "labels.csv: data.id_column: no column 'nope' (columns: file, path, label)"),
])
def test_labels_csv_whose_columns_cannot_be_told(flags: list[str], needle: str, tmp_path: Path) -> None:
    rows = ["file,path,label"]
    for i in range(4):
        write_png(tmp_path / "data" / "images" / f"{i}.png", 100)
        rows.append(f"{i}.png,images/{i}.png,{i % 2}")
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    result = run_cli("run", "--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "runs"), "--no-tui", *flags)
    assert_clean_failure(result, tmp_path / "runs", needle)


def test_resuming_with_a_changed_section_names_what_changed(tmp_path: Path) -> None:
    """Epochs raised by min_steps after images were added is a change the user never typed: the
    refusal names the key and both values, not only the section."""
    from engine.config import SweepConfig
    from engine.errors import ConfigError
    from engine.sweep.engine import create_or_resume

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    first = SweepConfig.model_validate({"train": {"epochs": 17, "image_size": 32, "augment": 0, "hflip": False}})
    create_or_resume(first, url, "photos", tmp_path)
    grown = first.model_copy(deep=True)
    grown.train.epochs = 20
    with pytest.raises(ConfigError, match=r"different 'train' section \(train\.epochs 17 -> 20\)") as raised:
        create_or_resume(grown, url, "photos", tmp_path)
    assert raised.value.key == "train"
    assert create_or_resume(first, url, "photos", tmp_path).resumed, "the same config resumes"
    # A study saved by an older version, before a train key existed, resumes with its default.
    from engine.storage import Store

    store = Store(url)
    older = first.to_dict()
    del older["train"]["seed"]
    store.update_sweep(store.sweep("photos").study_id, config=older)
    assert create_or_resume(first, url, "photos", tmp_path).resumed
