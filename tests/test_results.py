"""After a sweep: recommend, export, cleanup and checkpoints, and the original tracker's --action
spelling. One real tiny sweep is shared (copied per test), so each test sees real trials."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import optuna
import pytest
import yaml

from engine.storage import Store
from engine.sweep import checkpoints
from engine.training.package import read_meta
from tests.conftest import ROOT, invoke, run_cli
from tests.studies import make_study

# Module-scoped fixtures (a real sweep, a server): all of this file runs in one test process.
pytestmark = pytest.mark.xdist_group("test_results")

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny sweep of 6 trials that kept the best 3 checkpoints."""
    workdir = tmp_path_factory.mktemp("swept") / "runs"
    result = run_cli("run", "--config", str(TINY), "--n-trials", "6", "--workdir", str(workdir), "--no-tui",
                     env={"TUI_HPO__CHECKPOINTS__KEEP": "3"})
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture
def workdir(swept: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(swept, copy)
    return copy


def load(workdir: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'hpo.db'}")


def test_the_best_three_checkpoints_are_kept_and_best_model_is_the_best(swept: Path) -> None:
    study = load(swept)  # read only: the shared sweep itself, whose hard links a copy would lose
    folder = swept / "tiny"
    ranked = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: -t.value)
    assert set(checkpoints.on_disk(folder)) == {t.number for t in ranked[:3]}
    best = read_meta(folder / "best_model.safetensors").meta
    assert best["trial"] == ranked[0].number and best["value"] == pytest.approx(ranked[0].value)
    assert os.path.samefile(folder / "best_model.safetensors", checkpoints.path_of(folder, ranked[0].number))


def test_validate_estimates_the_time_from_this_workspaces_trials(swept: Path) -> None:
    """The 6 finished trials of test_resnet give `validate` its seconds per epoch, image and pixel."""
    study = load(swept)
    took = [t.user_attrs["duration_s"] for t in study.trials]
    result = run_cli("validate", str(TINY), "--n-trials", "10", "--parallel", "2", "--workdir", str(swept), "--json")
    assert result.returncode == 0, result.stderr
    timing = json.loads(result.stdout)["estimate"]
    assert timing["from_trials"] == 6 and timing["models"] == ["test_resnet"]
    # The same data, model, epochs and image size: a trial as long as the median trial was
    assert timing["per_trial_s"] == pytest.approx(statistics.median(took), abs=0.006)
    assert timing["seconds"] == pytest.approx(timing["per_trial_s"] * 5, abs=0.1), "10 trials, 2 at a time"


def test_checkpoint_plan_keeps_the_best_within_the_budget() -> None:
    values = {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.8}
    sizes = dict.fromkeys(values, 1024 * 1024)
    assert checkpoints.plan(values, sizes, maximize=True, keep=3, budget_mb=None) == [1, 3, 2]
    assert checkpoints.plan(values, sizes, maximize=True, keep=3, budget_mb=2.5) == [1, 3]
    assert checkpoints.plan(values, sizes, maximize=False, keep=2, budget_mb=None) == [0, 2]
    # A budget smaller than one checkpoint still keeps the best one.
    assert checkpoints.plan(values, sizes, maximize=True, keep=3, budget_mb=0.1) == [1]
    # Files of trials without a value (failed, pruned, deleted) are never kept.
    assert checkpoints.plan({1: 0.9}, sizes, maximize=True, keep=3, budget_mb=None) == [1]


def test_recommend_narrows_to_the_top_trials_and_the_yaml_runs(workdir: Path) -> None:
    result = invoke("recommend", "--workdir", str(workdir), "--top-fraction", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    study = load(workdir)
    top = sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value)[:3]
    assert report["top"] == 3 and report["completed"] == 6
    lr = report["config"]["search_space"]["lr"]
    assert lr["log"] and 1e-3 <= lr["low"] <= min(t.params["lr"] for t in top)
    assert max(t.params["lr"] for t in top) <= lr["high"] <= 1e-2
    path = Path(report["file"])
    assert path == workdir / "tiny" / "recommended.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["name"] == "tiny-focused" and config["resources"] == {"batch_multiplier": 1.0}
    # The focused sweep is a valid config that trains.
    run = run_cli("run", "--config", str(path), "--n-trials", "1", "--workdir", str(workdir), "--no-tui")
    assert run.returncode == 0, run.stderr
    assert len(load(workdir, "tiny-focused").trials) == 1
    table = invoke("recommend", "--workdir", str(workdir), "--study", "tiny", "--fix-below", "1.0")
    assert table.returncode == 0 and "fixed at" in table.stdout


def test_recommend_on_fixture_plain_and_running_studies(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=0, state="finished")
    result = invoke("recommend", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    changes = {c["name"]: c for c in json.loads(result.stdout)["changes"]}
    assert changes["lr"]["after"].startswith("[") and changes["batch_size"]["after"] == "dropped"
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(study_name="plain", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    plain = invoke("recommend", "--storage", url)
    assert plain.returncode == 2 and "plain Optuna study" in plain.stderr and "Traceback" not in plain.stderr
    make_study(tmp_path / "running", n_trials=0, running=1)
    empty = invoke("recommend", "--workdir", str(tmp_path / "running"))
    assert empty.returncode == 2 and "no completed trial yet" in empty.stderr


def test_recommend_keeps_conditions_and_fixes_what_the_top_agrees_on() -> None:
    from engine.config import SweepConfig
    from engine.insights.recommend import recommend

    config = SweepConfig.model_validate({"search_space": {
        "optimizer": {"choices": ["sgd", "adamw"]},
        "momentum": {"low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "batch_size": {"choices": [32, 64, 128]},
    }})
    study = optuna.create_study(direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adamw"])
        momentum = trial.suggest_float("momentum", 0.5, 0.99) if optimizer == "sgd" else 0.0
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("batch_size", [32, 64, 128])
        return (optimizer == "sgd") + momentum - abs(lr - 0.01)

    study.optimize(objective, n_trials=40)
    result = recommend(study, config, fraction=0.1)
    changes = {c.name: c for c in result.changes}
    assert changes["optimizer"].after == "fixed at sgd" and result.config["train"]["optimizer"] == "sgd"
    # momentum's condition holds for good now that sgd is fixed: it stays, unconditional and narrower.
    momentum = result.config["search_space"]["momentum"]
    assert "when" not in momentum and 0.5 <= momentum["low"] < momentum["high"] <= 0.99
    assert momentum["high"] - momentum["low"] < 0.49
    assert result.top == 4 and result.best == study.best_params
    SweepConfig.model_validate(result.config)  # a config the next sweep can load


RECIPES = {"search_space": {
    "model": {"choices": ["test_resnet", "test_vit"]},
    "batch_size": {"choices": [64, 128], "by": {"model": {"test_vit": {"choices": [16, 32]}}}},
    "lr": {"low": 1e-4, "high": 1e-1, "log": True},
}}


def recipe_study(url: str) -> tuple[optuna.Study, object]:
    """A study of per-model recipes, no training: test_vit with batch 16 wins, so the best trial's
    own params hold the per-case name `batch_size[model=test_vit]`; test_resnet with 64 comes next.
    Of the 30 trials (seeded), 9 are test_vit/16 and 6 test_resnet/64."""
    from engine.config import SweepConfig
    from engine.config.space import suggest

    config = SweepConfig.model_validate(RECIPES)
    study = optuna.create_study(study_name="recipes", storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=1))

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, config.search_space, config.train.model_dump())
        score = {("test_vit", 16): 2.0, ("test_resnet", 64): 1.5}.get((values["model"], values["batch_size"]), 0.0)
        return score - abs(values["lr"] - 0.01)

    study.optimize(objective, n_trials=30)
    assert "batch_size[model=test_vit]" in study.best_params
    return study, config


def test_per_case_names_never_reach_the_exported_results(tmp_path: Path) -> None:
    from engine.insights.results import export_results

    url = f"sqlite:///{tmp_path / 'recipes.db'}"
    study, config = recipe_study(url)
    written = export_results(study, config, tmp_path / "out", url)
    assert {p.name for p in written} == {"report.json", "trials.csv", "best_params.yaml", "best_config.yaml"}
    for path in written:
        assert "[model=" not in path.read_text(), path.name
    best = yaml.safe_load((tmp_path / "out" / "best_params.yaml").read_text())["params"]
    assert best["model"] == "test_vit" and best["batch_size"] == 16
    assert yaml.safe_load((tmp_path / "out" / "best_config.yaml").read_text())["train"]["batch_size"] == 16
    scores = json.loads((tmp_path / "out" / "report.json").read_text())["importance"]
    assert set(scores) == {"model", "batch_size", "lr"} and sum(scores.values()) == pytest.approx(1.0)
    header = (tmp_path / "out" / "trials.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("params_")] == ["params_batch_size", "params_lr", "params_model"]


def test_recommend_narrows_each_models_recipe_on_its_own(tmp_path: Path) -> None:
    from engine.config import SweepConfig
    from engine.insights.recommend import recommend

    study, config = recipe_study(f"sqlite:///{tmp_path / 'recipes.db'}")
    both = recommend(study, config, fraction=0.5)  # the top 15: test_vit/16 and test_resnet/64
    assert both.best["batch_size"] == 16 and "batch_size[model=test_vit]" not in both.best
    space = SweepConfig.model_validate(both.config).search_space  # a config the next sweep can load
    assert space["model"].choices == ["test_resnet", "test_vit"]
    assert space["batch_size"].choices == [64] and space["batch_size"].by["model"]["test_vit"].choices == [16]
    vit = recommend(study, config, fraction=0.1)  # the top 3, all test_vit: model is fixed, its case is the list
    space = SweepConfig.model_validate(vit.config).search_space
    assert vit.config["train"]["model"] == "test_vit" and "model" not in space
    assert space["batch_size"].choices == [16] and space["batch_size"].by is None


def test_export_writes_every_file_and_report_json(workdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = invoke("export", "--workdir", str(workdir), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    files = {Path(p).name for p in json.loads(result.stdout)["files"]}
    assert files == {"report.json", "trials.csv", "best_params.yaml", "best_config.yaml"}
    report = json.loads((out / "report.json").read_text())
    study = load(workdir)
    assert report["best"]["trial"] == study.best_trial.number and len(report["top"]) == 6
    assert set(report["importance"]) == {"lr", "batch_size"}
    assert report["counts"]["COMPLETE"] == 6
    # A plain Optuna study: no sweep config, so no best_config.yaml, and it says so.
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(study_name="plain", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    plain = invoke("export", "--storage", url, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0 and "no best_config.yaml" in plain.stdout
    assert not (tmp_path / "plain" / "best_config.yaml").exists()


def test_cleanup_trims_old_studies_and_leaves_running_ones(workdir: Path, tmp_path: Path) -> None:
    folder = workdir / "tiny"
    best = load(workdir).best_trial.number
    stray = checkpoints.path_of(folder, 99)  # a trial the storage has no value for
    stray.write_bytes(b"x" * 1000)
    (folder / "resume.yaml").write_text("x: 1\n")
    recent = invoke("cleanup", "--workdir", str(workdir), "--json")  # the sweep is minutes old
    assert recent.returncode == 0, recent.stderr
    removed = json.loads(recent.stdout)["removed"]
    assert [Path(r["path"]).name for r in removed] == ["trial_99.safetensors"] and not stray.exists()
    dry = invoke("cleanup", "--workdir", str(workdir), "--days", "0", "--keep", "1", "--dry-run")
    assert dry.returncode == 0 and "would remove" in dry.stdout and len(checkpoints.on_disk(folder)) == 3
    old = invoke("--workdir", str(workdir), "--action", "cleanup", "--days", "0")  # the tracker's spelling
    assert old.returncode == 0, old.stderr
    assert len(checkpoints.on_disk(folder)) == 3  # the study's own checkpoints.keep
    assert not (folder / "resume.yaml").exists()
    one = invoke("cleanup", "--workdir", str(workdir), "--days", "0", "--keep", "1")
    assert one.returncode == 0 and set(checkpoints.on_disk(folder)) == {best}
    assert os.path.samefile(folder / "best_model.safetensors", checkpoints.path_of(folder, best))
    for name in ("config.yaml", "best_config.yaml", "best_params.yaml", "trials.csv", "report.json"):
        assert (folder / name).is_file(), name
    # A study with live workers is left alone.
    make_study(tmp_path / "live", n_trials=3, running=1)
    live = invoke("cleanup", "--workdir", str(tmp_path / "live"), "--days", "0")
    assert live.returncode == 0 and "left alone: demo: running" in live.stdout


def test_the_original_tracker_actions(workdir: Path) -> None:
    summary = invoke("--workdir", str(workdir), "--action", "summary")
    assert summary.returncode == 0 and "best val_f1" in summary.stdout
    top = invoke("--workdir", str(workdir), "--action", "top", "--n", "2")
    assert top.returncode == 0 and "Top 2 trials" in top.stdout
    recommend = invoke("--workdir", str(workdir), "--action", "recommend")
    assert recommend.returncode == 0 and "recommended.yaml" in recommend.stdout
    bad = invoke("--workdir", str(workdir), "--action", "nope")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_samples_older_than_the_cutoff_are_pruned(workdir: Path) -> None:
    store = Store(f"sqlite:///{workdir / 'hpo.db'}")
    try:
        before = store.count_samples(time.time() + 1)
        assert before >= 1
        store.add_sample({"host": "old", "ts": time.time() - 30 * 86400, "cpu_percent": 1.0})
    finally:
        store.close()
    result = invoke("cleanup", "--workdir", str(workdir), "--days", "7", "--json")
    assert json.loads(result.stdout)["samples"] == 1


def test_a_sweep_whose_engine_was_killed_shows_as_interrupted_not_running(tmp_path: Path) -> None:
    """After kill -9 of the engine the stored state stays "running": summary said so forever."""
    import sqlalchemy as sa

    from engine.config import SweepConfig
    from engine.insights.summary import summary
    from engine.storage import Store, load_study
    from engine.sweep.engine import create_or_resume

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    create_or_resume(SweepConfig.model_validate({}), url, "killed", tmp_path)
    assert summary(load_study(url, "killed"), url)["state"] == "running", "just started: no worker yet, still running"
    store = Store(url)
    with store.tx() as conn:
        conn.execute(sa.text("UPDATE hpo_sweep SET updated = updated - 1000"))
    assert summary(load_study(url, "killed"), url)["state"] == "interrupted"
    worker = store.register_worker(store.sweep("killed").study_id, "host", 1, "cpu")
    assert summary(load_study(url, "killed"), url)["state"] == "running", "a live worker"
    with store.tx() as conn:
        conn.execute(sa.text("UPDATE hpo_worker SET last_seen = last_seen - 1000 WHERE id = :id"), {"id": worker})
    assert summary(load_study(url, "killed"), url)["state"] == "interrupted"
