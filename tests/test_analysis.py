"""`tui-hpo summary` and `top` on fixed studies: normal, empty, multi-objective, running; and the
verdict on the validation set a result is judged by."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from engine.insights.validation import judge
from tests.conftest import invoke
from tests.studies import DIGITS_SPLIT, SMALL_SPLIT, make_study


def test_summary_counts_best_pruning_savings_and_failures(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=1)
    result = invoke("summary", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["study"] == "demo" and report["state"] == "running"
    assert report["counts"]["COMPLETE"] == 9 and report["counts"]["PRUNED"] == 2
    assert report["counts"]["FAIL"] == 1 and report["counts"]["RUNNING"] == 1
    assert report["best"]["trial"] == 8 and report["best"]["params"]["model"] == "test_convnext"
    # trials 4 and 9 were pruned after 2 of 4 epochs: each would have taken twice as long
    assert report["pruning_saved_seconds"] > 0
    assert report["failures"] == [{"reason": "NonFiniteLoss: loss became nan in epoch 1", "count": 1}]
    table = invoke("summary", "--workdir", str(tmp_path))
    assert table.returncode == 0 and "best val_f1" in table.stdout and "saved by pruning" in table.stdout


def test_top_orders_by_the_objective(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=0, state="finished")
    result = invoke("top", "--n", "3", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["number"] for r in rows] == [8, 11, 7]
    assert rows[0]["values"][0] >= rows[1]["values"][0] >= rows[2]["values"][0]


def test_empty_and_multi_objective_studies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.create_study(study_name="empty", storage=url)
    result = invoke("summary", "--workdir", str(tmp_path), "--study", "empty", "--json")
    empty = json.loads(result.stdout)
    assert result.returncode == 0 and empty["best"] is None
    # a plain Optuna study: no split stored, so nothing to judge it by (and no error)
    assert empty["data"] is None and empty["validation"] is None and empty["class_f1"] is None
    assert empty["stopped_early"] == 0
    top = invoke("top", "--workdir", str(tmp_path), "--study", "empty")
    assert top.returncode == 0 and "no completed trial yet" in top.stdout
    multi = optuna.create_study(study_name="multi", storage=url, directions=["maximize", "minimize"])
    multi.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    report = json.loads(invoke("summary", "--workdir", str(tmp_path), "--json").stdout)  # the most recent
    assert report["study"] == "multi" and report["best"] is None and report["pareto_front"]
    assert "Pareto front" in invoke("summary", "--workdir", str(tmp_path)).stdout
    wide = optuna.create_study(study_name="wide", storage=url, directions=["maximize", "minimize"])
    wide.optimize(lambda t: (x := t.suggest_float("x", 0, 1), x), n_trials=8)  # every trial on the front
    text = " ".join(invoke("summary", "--workdir", str(tmp_path), "--study", "wide").stdout.split())
    assert "8 trial(s) trading" in text and "and 3 more (summary --json lists them all)" in text, text


def test_missing_workspace_or_study_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = invoke("summary", "--workdir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.startswith("tui-hpo: error: --workdir: no database")
    make_study(tmp_path, n_trials=3, running=0)
    unknown = invoke("top", "--workdir", str(tmp_path), "--study", "nope")
    assert unknown.returncode == 2 and "no study named 'nope' (known: demo)" in unknown.stderr


def test_importance_bars_json_and_evaluators(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=24, running=0, state="finished")
    result = invoke("importance", "--workdir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)["importance"]
    assert set(scores) == {"model", "lr"} and abs(sum(scores.values()) - 1) < 1e-6
    fanova = invoke("importance", "--workdir", str(tmp_path), "--evaluator", "fanova", "--json")
    assert fanova.returncode == 0 and set(json.loads(fanova.stdout)["importance"]) == {"model", "lr"}
    bars = invoke("importance", "--workdir", str(tmp_path))
    assert bars.returncode == 0 and "█" in bars.stdout and "lr" in bars.stdout


def test_importance_needs_two_completed_trials(tmp_path: Path) -> None:
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    result = invoke("importance", "--workdir", str(tmp_path))
    assert result.returncode == 2 and "importance needs two or more" in result.stderr


def test_summary_reports_the_split_its_noise_and_the_best_trials_classes(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=24, running=0, state="finished", data=DIGITS_SPLIT)
    report = json.loads(invoke("summary", "--workdir", str(tmp_path), "--json").stdout)
    assert report["data"] == DIGITS_SPLIT
    validation = report["validation"]
    best = report["best"]["value"]
    assert validation["images"] == 359 and validation["classes"] == 10
    assert (validation["smallest_class"], validation["largest_class"]) == (35, 36)
    assert validation["noise"] == pytest.approx(math.sqrt(best * (1 - best) / 359), abs=1e-4)
    assert validation["warning"] is None, "359 images, 35 of each class at least: big enough"
    assert set(report["class_f1"]) == set(DIGITS_SPLIT["val_counts"])
    assert report["stopped_early"] == 5  # completed trials 0, 8, 12, 16, 20
    table = invoke("summary", "--workdir", str(tmp_path)).stdout
    assert "1797 images: 1438 train, 359 validation (35-36 per class)" in table
    assert "warning" not in table and "±0.009" in table
    classes = table.split("F1 per class")[1]
    assert classes.index("9=0.93") < classes.index("0=0.99"), "the worst class comes first"
    assert "5 trial(s) ended by early stopping" in table


def test_summary_warns_when_the_validation_set_cannot_rank_trials(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=0, state="finished", data=SMALL_SPLIT)
    report = json.loads(invoke("summary", "--workdir", str(tmp_path), "--json").stdout)
    noise = report["validation"]["noise"]
    assert report["validation"]["warning"] == (
        f"validation set of 39 images (13 per class at least): differences below ~{noise:.2f} between trials "
        "are noise; use data.folds: 5 or more data")
    table = invoke("summary", "--workdir", str(tmp_path), env={"COLUMNS": "200"}).stdout
    assert "195 images: 156 train, 39 validation (13 per class)" in table
    assert "warning" in table and "use data.folds: 5 or more data" in table
    from tui_hpo.tables import summary_text  # the Analysis screen's header says it too, in warning colours

    header = summary_text(report)
    assert f"±{noise:.2f} (39 val)" in header.plain
    noted = [span for span in header.spans if "val)" in header.plain[span.start:span.end]]
    assert noted and "yellow" in str(noted[0].style)


def split(val_counts: dict[str, int], folds: int = 1) -> dict[str, object]:
    val = sum(val_counts.values())
    return {"images": val * 5, "train": val * 4, "val": val, "folds": folds, "val_counts": val_counts}


def test_the_validation_thresholds() -> None:
    assert judge(None, 0.9, "val_f1") is None
    assert judge(split({"a": 50, "b": 50}), 0.9, "val_f1")["warning"] is None
    assert judge(split({"a": 50, "b": 49}), 0.9, "val_f1")["warning"], "99 images: too few"
    assert judge(split({"a": 190, "b": 10}), 0.9, "val_f1")["warning"] is None
    assert judge(split({"a": 191, "b": 9}), 0.9, "val_f1")["warning"], "9 of one class: too few"
    # the brief's case: 39 images, 13 per class, best 0.9 -> one standard error is about 0.05
    small = judge(split({"a": 13, "b": 13, "c": 13}), 0.9, "val_accuracy")
    assert small["noise"] == pytest.approx(0.048, abs=1e-3) and "below ~0.05 between trials" in small["warning"]
    # k folds validate every image once: 5 folds of 20 are 100 images, 5 x 5 of the rarest class
    assert judge(split({"a": 5, "b": 15}, folds=5), 0.9, "val_f1")["warning"] is None
    four = judge(split({"a": 5, "b": 15}, folds=4), 0.9, "val_f1")["warning"]
    assert four.startswith("validation set of 4 folds of 20 images") and four.endswith("use data.folds: 5 or more data")
    assert judge(split({"a": 5, "b": 14}, folds=5), 0.9, "val_f1")["warning"].endswith("; use more data")
    # a loss is no share of images, and without a best there is no p: the noise at its largest, p=0.5
    assert judge(split({"a": 50, "b": 50}), 0.2, "val_loss")["noise_at"] == 0.5
    assert judge(split({"a": 50, "b": 50}), None, "val_f1")["noise"] == pytest.approx(0.05)
