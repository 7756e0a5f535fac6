"""Can the winner be trusted: repeat over seeds, Welch's t-test, the model-comparison preset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from scipy import stats as scipy_stats

from engine.stats import compare, describe, welch
from tests.conftest import ROOT, run_cli
from tests.studies import make_study

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def test_describe_gives_the_t_interval() -> None:
    d = describe("a", [0.90, 0.92, 0.94])
    assert d.n == 3 and math.isclose(d.mean, 0.92) and math.isclose(d.std, 0.02)
    half = scipy_stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert math.isclose(d.ci_low, 0.92 - half) and math.isclose(d.ci_high, 0.92 + half)
    single = describe("b", [0.5])
    assert single.std == 0 and single.ci_low is None


def test_welch_matches_scipy_and_says_when_it_cannot_tell() -> None:
    a, b = [0.91, 0.93, 0.92, 0.94], [0.85, 0.88, 0.86]
    t, p, _ = welch(a, b)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert math.isclose(t, expected.statistic) and math.isclose(p, expected.pvalue)
    assert welch([0.9], b)[1] is None and "at least two runs" in welch([0.9], b)[2]
    assert welch([0.9, 0.9], [0.8, 0.8])[2].startswith("every run gave the same value")
    ranked, tests = compare({"small": b, "big": a, "same": [0.92, 0.93]}, maximize=True)
    assert [g.name for g in ranked] == ["big", "same", "small"]
    assert tests[1].significant and tests[1].verdict.startswith("big is better than small (p=")
    assert not tests[0].significant and "more seeds would tell" in tests[0].verdict
    # Minimising (a loss): the lowest mean wins.
    assert compare({"low": [0.1, 0.12], "high": [0.5, 0.52]}, maximize=False)[0][0].name == "low"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("stats") / "runs"
    result = run_cli("run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui")
    assert result.returncode == 0, result.stderr
    return workdir


def test_repeat_retrains_the_top_configs_and_reproduces_the_trial(swept: Path) -> None:
    result = run_cli("repeat", "--workdir", str(swept), "--top", "2", "--seeds", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{swept / 'hpo.db'}")
    ranked = sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value)
    assert [c["trial"] for c in report["configs"]] == [ranked[0].number, ranked[1].number]
    for config, trial in zip(report["configs"], ranked, strict=False):
        runs = {int(seed): value for seed, value in config["runs"].items()}
        assert set(runs) == {0, 1} and all(0 < v <= 1 for v in runs.values())
        # Seed 0 is the trial's own: the same machine trains it to the same score.
        assert abs(runs[0] - trial.value) <= 0.005
        summary = config["summary"]
        assert summary["n"] == 2 and summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
    again = run_cli("repeat", "--workdir", str(swept), "--top", "2", "--seeds", "2")
    assert again.returncode == 0 and " seed " not in again.stderr + again.stdout.split("Top configs")[0], \
        "a second call trains nothing new"
    compared = run_cli("compare", "--workdir", str(swept), "--json")
    assert compared.returncode == 0, compared.stderr
    report = json.loads(compared.stdout)
    assert report["groups_from"].startswith("configs retrained over seeds")
    assert len(report["groups"]) == 2 and len(report["tests"]) == 1 and report["tests"][0]["verdict"]


def test_compare_by_parameter_and_bad_requests(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=24, running=0, state="finished")
    result = run_cli("compare", "--workdir", str(tmp_path), "--by", "model", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {g["name"] for g in report["groups"]} == {"model=test_resnet", "model=test_convnext",
                                                     "model=test_efficientnet"}
    assert all(t["p"] is not None for t in report["tests"])
    table = run_cli("compare", "--workdir", str(tmp_path))  # no repeats: the most varied categorical, model
    assert table.returncode == 0 and "grouped by model" in table.stdout
    assert "better than" in table.stdout or "no significant difference" in table.stdout
    unknown = run_cli("compare", "--workdir", str(tmp_path), "--by", "nope")
    assert unknown.returncode == 2 and "no completed trial has a parameter 'nope' (known: lr, model)" in unknown.stderr
    make_study(tmp_path / "running", n_trials=0, running=1)
    empty = run_cli("repeat", "--workdir", str(tmp_path / "running"))
    assert empty.returncode == 2 and "no completed trial yet" in empty.stderr and "Traceback" not in empty.stderr


def test_the_compare_preset_says_which_model_wins(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    run = run_cli("run", "--preset", "compare", "--workdir", str(workdir), "--no-tui",
                  env={"TUI_HPO__TRAIN__EPOCHS": "2"})
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="compare", storage=f"sqlite:///{workdir / 'hpo.db'}")
    pairs = {(t.params["model"], t.params["seed"]) for t in study.trials}
    assert len(pairs) == 9 == len(study.trials), "each model with each seed, once"
    result = run_cli("compare", "--workdir", str(workdir), "--by", "model", "--json")
    report = json.loads(result.stdout)
    assert [g["n"] for g in report["groups"]] == [3, 3, 3] and len(report["tests"]) == 2
    assert all(("better than" in t["verdict"]) == t["significant"] for t in report["tests"])
