"""Real sweeps on the embedded digits and small image folders, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT, invoke, run_cli, write_png

States = optuna.trial.TrialState


def load(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'hpo.db'}")


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state in (States.COMPLETE, States.PRUNED)]


def query(workdir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr + result.stdout
    assert "exited with code" not in result.stdout, result.stdout  # no worker crashed
    assert "Traceback" not in result.stdout + result.stderr


def test_sweep_trains_records_exports_reproduces_and_resumes(tmp_path: Path, tiny_config: Path) -> None:
    """One sweep checked end to end, then resumed both ways (each resume costs a worker's start, so
    they extend this sweep rather than start their own)."""
    workdir = tmp_path / "runs"
    # compile: auto (the CUDA default) on the CPU: it decides per shape, says why once, measures.
    result = run_cli("run", "--config", str(tiny_config), "--workdir", str(workdir), "--no-tui",
                     env={"TUI_HPO__RESOURCES__COMPILE": "auto"})
    assert_ok(result)
    # Not a terminal: one line per finished trial, then the top table.
    assert result.stdout.count(" complete: val_f1=") == 3
    assert "Top trials of 'tiny'" in result.stdout
    study = load(workdir, "tiny")
    assert len(finished(study)) == 3
    best = study.best_trial
    assert best.value >= 0.85, "a real model on real digits must learn"
    assert best.user_attrs["worker"].split(":")[1].isdigit() and best.user_attrs["device"] == "cpu"
    first = min(study.trials, key=lambda t: t.number)  # TPE starts from the config's own recipe
    assert first.params == {"lr": 1e-3, "batch_size": 64} and first.user_attrs["start"] == "the config's own recipe"
    assert all(t.user_attrs["class_f1"].keys() == {str(d) for d in range(10)} for t in study.trials)
    # Our own tables: epoch metrics per trial, system samples, events, workers.
    epochs = query(workdir, "SELECT trial_id, epoch, val_f1, samples_per_s, peak_mem_mb FROM hpo_epoch")
    assert len(epochs) == 3 * 2 and all(r[3] > 0 and r[4] > 0 for r in epochs)
    assert query(workdir, "SELECT COUNT(*) FROM hpo_sample")[0][0] >= 1
    assert query(workdir, "SELECT state FROM hpo_sweep") == [("finished",)]
    assert query(workdir, "SELECT COUNT(*) FROM hpo_worker WHERE state = 'exited'")[0][0] == 1
    assert not any(t.user_attrs["compiled"] for t in study.trials), "seconds of training never buy a compile"
    assert all(t.user_attrs["peak_mem_mb"] > 0 and "gpu" not in t.user_attrs for t in study.trials), "no GPU here"
    said = [m.split(": ", 1)[1] for (m,) in query(workdir, "SELECT message FROM hpo_event WHERE kind = 'compile'")]
    assert len(said) == len(set(said)) >= 2, said  # each decision once per shape and state
    assert any("its first trial runs eager" in m for m in said) and any("~60 s to compile" in m for m in said)
    assert query(workdir, "SELECT MIN(eager_step_s) > 0 FROM hpo_shape") == [(1,)], "eager steps measured"
    folder = workdir / "tiny"
    for name in ("config.yaml", "best_config.yaml", "best_params.yaml", "trials.csv", "engine.log",
                 "best_model.safetensors", "report.json", f"checkpoints/trial_{best.number}.safetensors"):
        assert (folder / name).is_file(), name
    params = yaml.safe_load((folder / "best_params.yaml").read_text())
    assert params["trial"] == best.number and params["params"] == best.params
    # The exported config trains again to the same score (same seed, same machine).
    again = run_cli("train", "--config", str(folder / "best_config.yaml"), "--json")
    assert_ok(again)
    metrics = json.loads(again.stdout)["final"]
    assert abs(metrics["val_f1"] - best.value) <= 0.005
    # The optuna CLI opens our database.
    optuna_cli = Path(sys.executable).parent / "optuna"
    listed = subprocess.run([str(optuna_cli), "studies", "--storage",
                             f"sqlite:///{workdir / 'hpo.db'}", "-f", "json"], capture_output=True, text=True)
    assert listed.returncode == 0 and '"tiny"' in listed.stdout, listed.stderr
    best_cli = subprocess.run([str(optuna_cli), "best-trial", "--study-name", "tiny", "--storage",
                               f"sqlite:///{workdir / 'hpo.db'}", "-f", "json"], capture_output=True, text=True)
    assert best_cli.returncode == 0 and f'"number": {best.number}' in best_cli.stdout, best_cli.stderr
    # Running the same study again resumes it; --count (--more) asks for N trials more than it has.
    more = run_cli("run", "--config", str(tiny_config), "--workdir", str(workdir), "--no-tui", "--count", "1")
    assert_ok(more)
    assert "sweep 'tiny' resumed (3 trials finished, 1 to go)" in " ".join(more.stdout.split())
    assert len(finished(load(workdir, "tiny"))) == 4
    # `run --resume` takes the saved config and the budget the database holds now (what the TUI's
    # "+" and a stop leave behind): without --config it still trains tiny's 2 epochs.
    with sqlite3.connect(workdir / "hpo.db") as conn:
        conn.execute("UPDATE hpo_sweep SET n_trials = 5, state = 'stopped'")
    resumed = run_cli("run", "--resume", "--study", "tiny", "--workdir", str(workdir), "--no-tui")
    assert_ok(resumed)
    assert "sweep 'tiny' resumed (4 trials finished, 1 to go)" in " ".join(resumed.stdout.split())
    assert len(finished(load(workdir, "tiny"))) == 5
    assert query(workdir, "SELECT COUNT(*) FROM hpo_epoch e JOIN trials t ON t.trial_id = e.trial_id "
                          "WHERE t.number = 4") == [(2,)]
    missing = run_cli("run", "--resume", "--study", "nope", "--workdir", str(workdir), "--no-tui")
    assert missing.returncode == 2 and "no sweep named 'nope'" in missing.stderr
    both = run_cli("run", "--config", str(tiny_config), "--workdir", str(workdir), "--more", "1", "--n-trials", "9")
    assert both.returncode == 2 and both.stderr.strip() == (
        "tui-hpo: error: --more: --more and --n-trials both set the budget: give one")


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path, tiny_config: Path) -> None:
    workdir = tmp_path / "runs"
    args = [sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(tiny_config), "--workdir", str(workdir),
            "--no-tui", "--n-trials", "2"]
    env = {**os.environ, "TUI_HPO__TRAIN__EPOCHS": "3", "TUI_HPO__SEARCH_SPACE__BATCH_SIZE__CHOICES": "[32]"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for one finished trial and the next one running
        time.sleep(0.5)
        if (workdir / "hpo.db").exists():
            try:
                states = dict(query(workdir, "SELECT state, COUNT(*) FROM trials GROUP BY state"))
            except sqlite3.OperationalError:
                continue
            if states.get("COMPLETE", 0) >= 1 and states.get("RUNNING", 0) >= 1:
                break
    else:
        proc.kill()
        pytest.fail("the sweep never got going")
    completed_before = {t.number: t.value for t in load(workdir, "tiny").trials if t.state == States.COMPLETE}
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    started = time.time()
    _out, err = proc.communicate(timeout=60)
    assert time.time() - started < 20, "Ctrl-C must stop within seconds"
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    study = load(workdir, "tiny")
    assert not [t for t in study.trials if t.state == States.RUNNING]
    interrupted = [t for t in study.trials if t.state == States.FAIL]
    assert interrupted and all(t.user_attrs.get("fail_reason") == "interrupted" for t in interrupted)
    assert query(workdir, "PRAGMA integrity_check") == [("ok",)]
    # The same command resumes and completes the budget; finished trials keep their values.
    resumed = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert_ok(resumed)
    study = load(workdir, "tiny")
    assert len(finished(study)) == 2
    for number, value in completed_before.items():
        assert study.trials[number].value == value
    rerun = [t for t in study.trials if t.user_attrs.get("retry_of") in {i.number for i in interrupted}]
    assert [t.state for t in rerun] == [States.COMPLETE] * len(interrupted), "each interrupted trial ran again"
    assert all(t.params == study.trials[t.user_attrs["retry_of"]].params for t in rerun), "with the same params"


def test_parallel_workers_share_one_multi_objective_study(tmp_path: Path) -> None:
    """Two workers on one NSGA-II study of two objectives (one sweep for both: each costs a worker's start)."""
    config = tmp_path / "mo.yaml"
    config.write_text(f"extends: {ROOT / 'tests/configs/tiny.yaml'}\ntrain: {{epochs: 1}}\n"
                      "objective: {metric: [val_f1, train_time]}\nsampler: {name: nsga2, seed: 1}\n")
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--workdir", str(workdir), "--no-tui",
                     "--parallel", "2", "--n-trials", "4")
    assert_ok(result)
    study = load(workdir, "mo")
    assert len(study.directions) == 2 and len(finished(study)) == 4 and len(study.trials) == 4
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    front = yaml.safe_load((workdir / "mo" / "best_params.yaml").read_text())["pareto_front"]
    assert front and set(front[0]["values"]) == {"val_f1", "train_time"}
    # The kept model is the best by the first objective, so predict works from this sweep too
    from engine.training.package import read_meta

    best_f1 = max(finished(study), key=lambda t: (t.values[0], -t.number))
    assert read_meta(workdir / "mo" / "best_model.safetensors").meta["trial"] == best_f1.number


def test_kfold_with_wilcoxon_pruner_on_the_csv_layout(tmp_path: Path, csv_dataset: Path) -> None:
    """k-fold trials on a CSV dataset whose unsafe, missing and duplicate rows are skipped and named."""
    config = tmp_path / "kfold.yaml"
    config.write_text(f"extends: {ROOT / 'tests/configs/tiny.yaml'}\ntrain: {{epochs: 1}}\n"
                      "data: {folds: 3}\npruner: {name: wilcoxon}\nbudget: {n_trials: 2}\n")
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--data", str(csv_dataset), "--workdir", str(workdir),
                     "--no-tui")
    assert_ok(result)
    for expected in ("missing.png (missing)", "../escape.png (outside the data folder)",
                     "/etc/passwd (outside the data folder)", "img1.png (duplicate id)"):
        assert expected in result.stdout
    assert "30 images, 2 classes" in result.stdout
    study = load(workdir, "kfold")
    assert len(finished(study)) == 2
    folds = query(workdir, "SELECT DISTINCT fold FROM hpo_epoch ORDER BY fold")
    assert folds == [(0,), (1,), (2,)]
    complete = [t for t in study.trials if t.state == States.COMPLETE]
    assert complete and all(sorted(t.intermediate_values) == [0, 1, 2] for t in complete)


def test_wandb_grid_sweep_runs_every_point_once(tmp_path: Path) -> None:
    """A W&B file without a program tunes the built-in trainer, its parameters by their names there."""
    config = tmp_path / "wandb.yaml"
    config.write_text("method: grid\nmetric: {name: eval/accuracy, goal: maximize}\nparameters:\n"
                      "  learning_rate: {values: [0.003, 0.01]}\n  num_train_epochs: {value: 1}\n"
                      "  model: {value: test_resnet}\n  img_size: {value: 24}\n")
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--workdir", str(workdir), "--no-tui", "--n-trials", "5",
                     "--parallel", "1")
    assert_ok(result)
    study = load(workdir, "wandb")
    assert sorted(t.params["lr"] for t in finished(study)) == [0.003, 0.01]
    assert "the grid has 2 points" in result.stdout


def test_failed_trials_stop_the_sweep_with_their_reasons(tmp_path: Path) -> None:
    """The two ways a built-in trial fails on its own, one grid point each: a loss that diverges, and
    a runaway trial past budget.trial_timeout, stopped at its next batch. Neither is queued to run
    again (each would fail again), and two failures in a row stop the sweep. A loss is checked at the
    end of each epoch: 300 images make epochs short enough for the diverging trial to end there
    long before its time limit, even on a loaded machine."""
    config = tmp_path / "failing.yaml"
    config.write_text(f"extends: {ROOT / 'tests/configs/tiny.yaml'}\ndata: {{subset: 300}}\n"
                      "train: {warmup_ratio: 0.0, epochs: 200}\nsearch_space:\n"
                      "  lr: {choices: [1.0e-3, 1.0e+30]}\n  batch_size: null\nsampler: {name: grid, seed: 0}\n"
                      "budget: {n_trials: 6, trial_timeout: 3, max_consecutive_failures: 2}\n")
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--workdir", str(workdir), "--no-tui")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stopped after 2 consecutive failed trials" in result.stdout
    study = load(workdir, "failing")
    assert [t.state for t in study.trials] == [States.FAIL, States.FAIL], "failed, and not queued again"
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert "NonFiniteLoss: loss became" in by_lr[1e30].user_attrs["fail_reason"]
    runaway = by_lr[1e-3]
    assert runaway.user_attrs["fail_reason"] == "ran past budget.trial_timeout (3 s)"
    assert runaway.user_attrs["duration_s"] < 15 and query(workdir, "SELECT COUNT(*) FROM hpo_epoch")[0][0] < 200


def test_timeout_stops_starting_trials_on_a_folder_with_broken_files(tmp_path: Path, image_folder: Path) -> None:
    """A time budget ends the sweep as its trial budget would: no new trials, and the best trial
    measured on data.test. The training folder's broken files are skipped and named, and the two
    classes (dark against bright) are learnt."""
    for i in range(100, 104):
        write_png(tmp_path / "test" / "dark" / f"d{i}.png", 40 + i % 7)
        write_png(tmp_path / "test" / "bright" / f"b{i}.png", 210 - i % 7)
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(ROOT / "tests/configs/tiny.yaml"), "--workdir", str(workdir), "--no-tui",
                     "--n-trials", "500", "--train-data", str(image_folder), "--test-data", str(tmp_path / "test"),
                     # From the sweep's start: the worker's start counts, which took over 25 s under the
                     # suite's load once (no trial at all)
                     "--timeout", "40",
                     env={"TUI_HPO__TRAIN__EPOCHS": "4", "TUI_HPO__SEARCH_SPACE__BATCH_SIZE__CHOICES": "[8]"})
    assert_ok(result)
    assert "skipped 4 file(s)" in result.stdout
    for name in ("empty.png (empty)", "notes.txt (not an image)", "fake.png (not an image)", "truncated.png"):
        assert name in result.stdout
    assert "2 classes" in result.stdout
    events = query(workdir, "SELECT message FROM hpo_event WHERE kind = 'data'")
    assert events and "skipped" in events[0][0]
    assert "time budget of 40s reached" in result.stdout
    study = load(workdir, "tiny")
    assert 1 <= len(finished(study)) < 500
    assert query(workdir, "SELECT state FROM hpo_sweep") == [("stopped",)]
    assert study.best_value >= 0.9  # dark against bright: trivially separable
    tested = study.user_attrs["tui_hpo"]["test"]
    assert tested["trial"] == study.best_trial.number and tested["images"] == 8, tested


def test_a_bad_learning_rate_is_pruned_by_the_median_pruner(tmp_path: Path) -> None:
    """A real sweep that prunes: four grid points, one with a learning rate far too small to learn.
    The grid's seed puts two good points first (the pruner's start-up trials), so the bad one
    meets a median of good curves after its first epoch and is pruned there (the fourth, a little
    worse than the first two, may be pruned too: it is below their median); the summary counts
    them and what stopping them early saved."""
    config = tmp_path / "prune.yaml"
    config.write_text("name: prune\ntrain: {model: test_resnet, epochs: 3, image_size: 24, batch_size: 64}\n"
                      "search_space:\n  lr: {choices: [0.003, 0.002, 1.0e-8, 0.0015]}\n"
                      "sampler: {name: grid, seed: 9}\n"
                      "pruner: {name: median, options: {n_startup_trials: 2, n_warmup_steps: 0}}\n"
                      "budget: {n_trials: 4}\nresources: {parallel: 1, batch_multiplier: 1.0}\n")
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(config), "--workdir", str(workdir), "--no-tui")
    assert_ok(result)
    study = load(workdir, "prune")
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert [t.params["lr"] for t in sorted(study.trials, key=lambda t: t.number)][:2] == [0.003, 0.002]
    bad = by_lr[1e-8]
    assert bad.state == States.PRUNED, [(t.params, t.state, t.intermediate_values) for t in study.trials]
    assert len(bad.intermediate_values) < 3, "pruned before its last epoch"
    assert by_lr[0.003].state == by_lr[0.002].state == States.COMPLETE
    pruned = [t for t in study.trials if t.state == States.PRUNED]
    assert all(t.state == States.COMPLETE for t in study.trials if t not in pruned)
    assert f"trial {bad.number} pruned in epoch 1" in result.stdout
    assert query(workdir, "SELECT COUNT(*) FROM hpo_event WHERE kind = 'trial_pruned'") == [(len(pruned),)]
    summary = json.loads(invoke("summary", "--workdir", str(workdir), "--json").stdout)
    assert summary["counts"]["PRUNED"] == len(pruned) and summary["counts"]["COMPLETE"] == 4 - len(pruned)
    assert summary["pruning_saved_seconds"] > 0
