"""`tui-hpo summary` and `top` on fixed studies: normal, empty, multi-objective, running."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from tests.conftest import run_cli
from tests.studies import make_study


def test_summary_counts_best_pruning_savings_and_failures(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=1)
    result = run_cli("summary", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["study"] == "demo" and report["state"] == "running"
    assert report["counts"]["COMPLETE"] == 9 and report["counts"]["PRUNED"] == 2
    assert report["counts"]["FAIL"] == 1 and report["counts"]["RUNNING"] == 1
    assert report["best"]["trial"] == 8 and report["best"]["params"]["model"] == "test_convnext"
    # trials 4 and 9 were pruned after 2 of 4 epochs: each would have taken twice as long
    assert report["pruning_saved_seconds"] > 0
    assert report["failures"] == [{"reason": "NonFiniteLoss: loss became nan in epoch 1", "count": 1}]
    table = run_cli("summary", "--workdir", str(tmp_path))
    assert table.returncode == 0 and "best val_f1" in table.stdout and "saved by pruning" in table.stdout


def test_top_orders_by_the_objective(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=0, state="finished")
    result = run_cli("top", "--n", "3", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["number"] for r in rows] == [8, 11, 7]
    assert rows[0]["values"][0] >= rows[1]["values"][0] >= rows[2]["values"][0]


def test_empty_and_multi_objective_studies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.create_study(study_name="empty", storage=url)
    result = run_cli("summary", "--workdir", str(tmp_path), "--study", "empty", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["best"] is None
    top = run_cli("top", "--workdir", str(tmp_path), "--study", "empty")
    assert top.returncode == 0 and "no completed trial yet" in top.stdout
    multi = optuna.create_study(study_name="multi", storage=url, directions=["maximize", "minimize"])
    multi.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    report = json.loads(run_cli("summary", "--workdir", str(tmp_path), "--json").stdout)  # the most recent
    assert report["study"] == "multi" and report["best"] is None and report["pareto_front"]
    assert "Pareto front" in run_cli("summary", "--workdir", str(tmp_path)).stdout


def test_missing_workspace_or_study_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = run_cli("summary", "--workdir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.startswith("tui-hpo: error: --workdir: no database")
    make_study(tmp_path, n_trials=3, running=0)
    unknown = run_cli("top", "--workdir", str(tmp_path), "--study", "nope")
    assert unknown.returncode == 2 and "no study named 'nope' (known: demo)" in unknown.stderr


def test_importance_bars_json_and_evaluators(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=24, running=0, state="finished")
    result = run_cli("importance", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)["importance"]
    assert set(scores) == {"model", "lr"} and abs(sum(scores.values()) - 1) < 1e-6
    fanova = run_cli("importance", "--workdir", str(tmp_path), "--evaluator", "fanova", "--json")
    assert fanova.returncode == 0 and set(json.loads(fanova.stdout)["importance"]) == {"model", "lr"}
    bars = run_cli("importance", "--workdir", str(tmp_path))
    assert bars.returncode == 0 and "█" in bars.stdout and "lr" in bars.stdout


def test_importance_needs_two_completed_trials(tmp_path: Path) -> None:
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    result = run_cli("importance", "--workdir", str(tmp_path))
    assert result.returncode == 2 and "importance needs two or more" in result.stderr
