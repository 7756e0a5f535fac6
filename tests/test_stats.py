"""Can the winner be trusted: repeat over seeds, Welch's t-test, the model-comparison preset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from scipy import stats as scipy_stats

from engine.insights.stats import compare_groups, describe, welch
from tests.conftest import ROOT, invoke, run_cli
from tests.studies import make_study

# Module-scoped fixtures (a real sweep, a server): all of this file runs in one test process.
pytestmark = pytest.mark.xdist_group("test_stats")

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def test_describe_gives_the_t_interval() -> None:
    d = describe([0.90, 0.92, 0.94], "a")
    assert d.n == 3 and math.isclose(d.mean, 0.92) and math.isclose(d.std, 0.02)
    assert (d.min, d.max) == (0.90, 0.94)
    half = scipy_stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert math.isclose(d.ci_low, 0.92 - half) and math.isclose(d.ci_high, 0.92 + half)
    assert d.ci_low < d.mean < d.ci_high
    single = describe([0.5])
    assert single.n == 1 and single.std == 0 and single.ci_low is None and single.ci_high is None
    with pytest.raises(ValueError):
        describe([])


def test_welch_matches_scipy_and_says_when_it_cannot_tell() -> None:
    a, b = [0.91, 0.93, 0.92, 0.94], [0.85, 0.88, 0.86]
    t, p, why = welch(a, b)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert math.isclose(t, expected.statistic) and math.isclose(p, expected.pvalue) and why == ""
    assert welch([0.9], b)[:2] == (None, None) and "at least two runs" in welch([0.9], b)[2]
    assert welch([0.9, 0.9], [0.8, 0.8])[1] is None
    assert welch([0.9, 0.9], [0.8, 0.8])[2].startswith("every run gave the same value")
    assert welch([0.9, 0.9], [0.9, 0.9])[:2] == (0.0, 1.0)
    ranked, tests = compare_groups({"small": b, "big": a, "same": [0.92, 0.93]}, maximize=True)
    assert [g.name for g in ranked] == ["big", "same", "small"]
    assert tests[1].significant and tests[1].verdict.startswith("big is better than small (p=")
    assert tests[1].verdict.endswith("significant at 0.05)")
    assert not tests[0].significant and tests[0].verdict.endswith("more seeds would tell")
    _, [untestable] = compare_groups({"a": a, "one": [0.5]}, maximize=True)
    assert untestable.p is None and not untestable.significant
    assert untestable.verdict == "cannot tell a from one: needs at least two runs of each (more seeds)"
    # Minimising (a loss): the lowest mean wins.
    assert compare_groups({"low": [0.1, 0.12], "high": [0.5, 0.52]}, maximize=False)[0][0].name == "low"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("stats") / "runs"
    result = run_cli("run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui")
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.mark.slow
def test_repeat_retrains_the_top_configs_and_reproduces_the_trial(swept: Path) -> None:
    result = run_cli("repeat", "--workdir", str(swept), "--top", "2", "--seeds", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["trained_now"] == 4 and report["metric"] == "val_f1"
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
    # In this process: a second call trains nothing, so it need not pay a fresh interpreter's imports.
    again = invoke("repeat", "--workdir", str(swept), "--top", "2", "--seeds", "2", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["trained_now"] == 0, "a second call trains nothing new"
    compared = invoke("compare", "--workdir", str(swept), "--json")
    assert compared.returncode == 0, compared.stderr
    report = json.loads(compared.stdout)
    assert report["groups_from"].startswith("configs retrained over seeds")
    assert [g["n"] for g in report["groups"]] == [2, 2] and len(report["tests"]) == 1
    assert report["groups"][0]["name"] == f"trial {ranked[0].number}"


def test_compare_by_parameter_and_bad_requests(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=24, running=0, state="finished")
    result = invoke("compare", "--workdir", str(tmp_path), "--by", "model", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [g["name"] for g in report["groups"]] == ["model=test_efficientnet", "model=test_convnext",
                                                     "model=test_resnet"]
    assert [t["verdict"] for t in report["tests"]] == [
        "no significant difference between model=test_efficientnet and model=test_convnext (p=0.987): "
        "more seeds would tell",
        "no significant difference between model=test_efficientnet and model=test_resnet (p=0.558): "
        "more seeds would tell"]
    table = invoke("compare", "--workdir", str(tmp_path))  # no repeats: the most varied categorical, model
    assert table.returncode == 0 and "grouped by model" in table.stdout and "more seeds would tell" in table.stdout
    unknown = invoke("compare", "--workdir", str(tmp_path), "--by", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr == "tui-hpo: error: --by: no completed trial has a parameter 'nope' (known: lr, model)\n"
    continuous = invoke("compare", "--workdir", str(tmp_path), "--by", "lr")
    assert continuous.returncode == 2 and "'lr' is continuous" in continuous.stderr
    make_study(tmp_path / "running", n_trials=0, running=1)
    for command in ("repeat", "compare"):
        empty = invoke(command, "--workdir", str(tmp_path / "running"))
        assert empty.returncode == 0 and "Traceback" not in empty.stderr
        assert "study 'demo' has no completed trial yet (1 running)" in empty.stdout
        assert "still running" in empty.stdout


def test_plain_optuna_studies_multi_objective_and_all_failed(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
    models = optuna.distributions.CategoricalDistribution(["a", "b"])
    for i in range(6):
        model = "ab"[i % 2]
        study.add_trial(optuna.trial.create_trial(params={"model": model}, distributions={"model": models},
                                                  values=[i / 10 + (model == "a"), i]))
    failed = optuna.create_study(study_name="failed", storage=storage)
    failed.tell(failed.ask(), state=optuna.trial.TrialState.FAIL)
    failed.tell(failed.ask(), state=optuna.trial.TrialState.PRUNED)
    result = invoke("compare", "--workdir", str(tmp_path), "--study", "two", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups_from"] == "completed trials grouped by model"
    assert report["notes"] == ["2 objectives: ranked and compared by the first (value)"]
    assert report["tests"][0]["verdict"].startswith("model=a is better than model=b (p=")
    nothing = invoke("compare", "--workdir", str(tmp_path), "--study", "failed")
    assert nothing.returncode == 0
    assert "no completed trial yet (1 failed, 1 pruned): nothing to compare" in " ".join(nothing.stdout.split())
    plain = invoke("repeat", "--workdir", str(tmp_path), "--study", "two")
    assert plain.returncode == 2 and "plain Optuna study: there is no config to train again" in plain.stderr
    bad = invoke("repeat", "--workdir", str(tmp_path), "--study", "two", "--seed-list", "1,x")
    assert bad.returncode == 2 and bad.stderr.startswith("tui-hpo: error: --seed-list: '1,x' is not")


@pytest.mark.slow
def test_the_compare_preset_says_which_model_wins(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    # One epoch (not 100 steps) on a quarter of the digits: the verdicts need runs of each model, not good ones.
    run = run_cli("run", "--preset", "compare", "--workdir", str(workdir), "--no-tui",
                  env={"TUI_HPO__TRAIN__EPOCHS": "1", "TUI_HPO__TRAIN__MIN_STEPS": "null",
                       "TUI_HPO__DATA__SUBSET": "450"})
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="compare", storage=f"sqlite:///{workdir / 'hpo.db'}")
    pairs = {(t.params["model"], t.params["seed"]) for t in study.trials}
    assert len(pairs) == 9 == len(study.trials), "each model with each seed, once"
    result = invoke("compare", "--workdir", str(workdir), "--by", "model", "--json")
    report = json.loads(result.stdout)
    assert [g["n"] for g in report["groups"]] == [3, 3, 3] and len(report["tests"]) == 2
    assert all(("better than" in t["verdict"]) == t["significant"] for t in report["tests"])
    # The searched seed reaches train.seed: the rerun with the trial's own seed reproduces it.
    repeated = run_cli("repeat", "--workdir", str(workdir), "--top", "1", "--seeds", "1", "--json")
    [config] = json.loads(repeated.stdout)["configs"]
    best = study.best_trial
    assert config["trial"] == best.number and list(config["runs"]) == [str(best.params["seed"])]
    assert abs(config["runs"][str(best.params["seed"])] - best.value) <= 0.005
