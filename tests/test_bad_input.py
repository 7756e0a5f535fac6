"""Every kind of bad input: one line naming file/key/path, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke, run_cli, write_png

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
    "negative_seed": ("train: {seed: -1}\n", [], "train.seed: input should be greater than or equal to 0"),
    "negative_split_seed": ("data: {split_seed: -1}\n", [], "data.split_seed"),
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


def one_line_error(result) -> str:
    """The one line a refused command prints (exit 2, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, \
        result.stderr + result.stdout
    return lines[0]


def test_a_plain_optuna_study_is_read_but_never_run_into(tmp_path: Path) -> None:
    """Running, resuming or extending a study plain Optuna made would add trials of another
    objective to it (they failed, and the sweep still exited 0): refused, the database untouched."""
    import sqlite3

    import optuna

    workdir = tmp_path / "runs"
    workdir.mkdir()
    url = f"sqlite:///{workdir / 'hpo.db'}"
    study = optuna.create_study(study_name="theirs", storage=url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    for extra in (["--preset", "quick", "--n-trials", "1"], ["--resume"], ["--more", "1"]):
        line = one_line_error(run_cli("run", "--workdir", str(workdir), "--study", "theirs", "--no-tui", *extra))
        assert "--study: study 'theirs' was not made by tui-hpo" in line, (extra, line)
    with sqlite3.connect(workdir / "hpo.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 2
    assert not {t for t in tables if t.startswith("hpo_")}, "our tables were added to their database"
    assert invoke("summary", "--workdir", str(workdir), "--study", "theirs").returncode == 0, "still readable"


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "--out", "{dir}", "--config", "{config}"], "--out': {dir} is a folder: name a file"),
    (["predict", "--out", "{dir}", "--model", "m.safetensors", "--data", "{dir}"], "{dir} is a folder: name a file"),
    (["recommend", "--out", "{file}/x.yaml"], "{file}/x.yaml: its folder does not exist"),
    (["export", "--out", "{file}"], "{file} is a file: name a folder"),
    (["visualize", "--out", "{file}", "--no-terminal"], "{file} is a file: name a folder"),
])
def test_an_out_path_that_cannot_be_written_is_refused_before_any_work(args: list[str], needle: str,
                                                                      tmp_path: Path) -> None:
    """Before the fix, `train --out DIR` failed after the whole training run, and the others
    ended in FileExistsError or IsADirectoryError tracebacks."""
    (tmp_path / "afile").write_text("x")
    names = {"dir": str(tmp_path), "file": str(tmp_path / "afile"), "config": str(tmp_path / "c.yaml")}
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    line = one_line_error(invoke(*(a.format(**names) for a in args)))
    assert needle.format(**names) in line, line


def test_a_workdir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    line = one_line_error(run_cli("run", "--preset", "quick", "--n-trials", "1", "--workdir", str(tmp_path / "afile"),
                                  "--no-tui"))
    assert line == f"tui-hpo: error: {tmp_path / 'afile'}: exists and is not a folder"


def test_a_storage_url_to_a_missing_file_creates_no_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (["summary"], ["top"], ["cleanup"]):
        line = one_line_error(invoke(*command, "--storage", url))
        assert f"--storage: no database at {tmp_path / 'typo.db'}" in line, line
    assert not (tmp_path / "typo.db").exists()


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    workdir.mkdir()
    (workdir / "hpo.db").write_text("garbage, not SQLite\n")
    needle = f"cannot open the storage sqlite:///{workdir / 'hpo.db'}: file is not a database"
    assert needle in one_line_error(run_cli("run", "--preset", "quick", "--n-trials", "1", "--workdir", str(workdir),
                                            "--no-tui"))
    for command in (["summary"], ["cleanup"]):
        assert needle in one_line_error(invoke(*command, "--workdir", str(workdir)))
    assert (workdir / "hpo.db").read_text() == "garbage, not SQLite\n"


def test_cleanup_of_an_unknown_study_is_refused(tmp_path: Path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.create_study(study_name="known", storage=url)
    line = one_line_error(invoke("cleanup", "--workdir", str(tmp_path), "--study", "nosuch"))
    assert "--study: no study named 'nosuch' (known: known)" in line


def test_data_that_leaves_no_training_image_is_refused(tmp_path: Path) -> None:
    """One image per class all goes to validation: trials trained on nothing and reported chance."""
    for i, name in enumerate(("cats", "dogs")):
        write_png(tmp_path / "data" / name / "0.png", 60 * (i + 1))
    workdir = tmp_path / "runs"
    result = run_cli("run", "--data", str(tmp_path / "data"), "--workdir", str(workdir), "--no-tui")
    assert_clean_failure(result, workdir, "data.path: no training images left: all 2 of 2 go to validation")


def test_a_worker_for_a_sweep_that_does_not_exist_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    """It exited 1 with a message of its own format, and left a new database behind."""
    missing = f"sqlite:///{tmp_path / 'w' / 'hpo.db'}"
    (tmp_path / "w").mkdir()
    line = one_line_error(invoke("worker", "--storage", missing, "--study", "x"))
    assert f"--storage: no database at {tmp_path / 'w' / 'hpo.db'}" in line
    assert not (tmp_path / "w" / "hpo.db").exists()
    import optuna

    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    line = one_line_error(invoke("worker", "--workdir", str(tmp_path), "--study", "x"))
    assert f"--study: no sweep named 'x' in {tmp_path / 'hpo.db'}: start it first" in line


def test_attach_to_nothing_or_without_a_terminal_is_one_line(tmp_path: Path) -> None:
    """attach opened the full-screen app on a study that did not exist, and into a pipe."""
    import optuna

    optuna.create_study(study_name="there", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    assert "--study: no study named 'nosuch' (known: there)" in one_line_error(
        invoke("attach", "--workdir", str(tmp_path), "--study", "nosuch"))
    assert "--workdir: no database at" in one_line_error(invoke("attach", "--workdir", str(tmp_path / "none")))
    assert "attach: the dashboard needs a terminal" in one_line_error(invoke("attach", "--workdir", str(tmp_path)))
