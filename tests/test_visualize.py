"""`tui-hpo visualize`: PNGs and a self-contained report.html, terminal charts, --json, and the
studies that have little to draw (empty, failed only, multi-objective, one parameter)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from tests.conftest import invoke
from tests.studies import make_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("optimization_history", "param_importances", "parallel_coordinate", "slice", "contour",
           "learning_curves")


def _fail(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0, 1)
    raise RuntimeError("boom")


@pytest.fixture
def plain_studies(tmp_path: Path) -> Path:
    """Studies Optuna made without tui-hpo: empty, multi-objective, failed only, one parameter."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.create_study(study_name="empty", storage=url)
    multi = optuna.create_study(study_name="multi", storage=url, directions=["maximize", "minimize"])
    multi.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    optuna.create_study(study_name="failed", storage=url).optimize(_fail, n_trials=3, catch=(RuntimeError,))
    optuna.create_study(study_name="one", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    return tmp_path


def _json(*args: str) -> dict:
    result = invoke("visualize", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_files_report_and_terminal_charts(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=12, running=1)
    result = invoke("visualize", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "demo" / "analysis"
    for name in FIGURES:
        assert (folder / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name
    report = (folder / "report.html").read_text()
    assert report.count("data:image/png;base64,") == len(FIGURES)
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", report), "the report must load nothing"
    assert "<script" not in report
    assert "Top 9 trials by val_f1" in report and "NonFiniteLoss" in report and "still running" in report
    out = result.stdout
    assert "note: study still running (1 trial(s) in progress)" in out
    assert "Optimisation history: val_f1 by trial" in out and "┌" in out and "best so far" in out
    assert "Parameter importance for val_f1" in out and "█" in out
    assert "Learning curves of the 5 best trial(s)" in out and "#8 best" in out
    assert "Wrote 7 file(s)" in out and "report.html" in out
    assert "\x1b[" not in out, "no colour codes when the output is not a terminal"


def test_json_out_dir_and_terminal_only(tmp_path: Path) -> None:
    make_study(tmp_path, n_trials=8, running=0, state="finished")
    out = tmp_path / "elsewhere"
    report = _json("--workdir", str(tmp_path), "--out", str(out))
    assert report["study"] == "demo" and report["skipped"] == [] and report["notes"] == []
    assert [Path(f).name for f in report["files"]] == [f"{name}.png" for name in FIGURES] + ["report.html"]
    assert all(Path(f).parent == out for f in report["files"])
    terminal = invoke("visualize", "--workdir", str(tmp_path), "--no-files")
    assert terminal.returncode == 0 and "Optimisation history" in terminal.stdout and "Wrote" not in terminal.stdout
    assert not (tmp_path / "demo" / "analysis").exists()


def test_empty_and_failed_only_studies_say_so(plain_studies: Path) -> None:
    for study, counts in (("empty", "0 failed"), ("failed", "3 failed")):
        result = invoke("visualize", "--workdir", str(plain_studies), "--study", study)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert f"study '{study}' has no completed trial yet ({counts}" in result.stdout
        assert "no figure: no completed trial yet" in result.stdout
        report = (plain_studies / study / "analysis" / "report.html").read_text()
        assert "no completed trial yet" in report and "data:image/png" not in report
    report = _json("--workdir", str(plain_studies), "--study", "failed")
    assert [Path(f).name for f in report["files"]] == ["report.html"]
    assert {s["figure"] for s in report["skipped"]} == set(FIGURES)


def test_multi_objective_uses_the_first_and_says_so(plain_studies: Path) -> None:
    result = invoke("visualize", "--workdir", str(plain_studies), "--study", "multi")
    assert result.returncode == 0, result.stderr
    assert "multi-objective study (value, value1): the figures show the first objective" in " ".join(
        result.stdout.split())
    assert "Optimisation history: value by trial" in result.stdout
    report = (plain_studies / "multi" / "analysis" / "report.html").read_text()
    assert "Pareto front" in report and report.count("data:image/png;base64,") == len(FIGURES) - 1
    skipped = _json("--workdir", str(plain_studies), "--study", "multi")["skipped"]
    assert [s["figure"] for s in skipped] == ["learning_curves"]


def test_one_parameter_skips_the_contour_with_a_reason(plain_studies: Path) -> None:
    skipped = _json("--workdir", str(plain_studies), "--study", "one")["skipped"]
    contour = next(s for s in skipped if s["figure"] == "contour")
    assert contour["reason"] == "needs 2+ parameters, the study has 1"


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = invoke("visualize", "--workdir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.startswith("tui-hpo: error: --workdir: no database")
    nothing = invoke("visualize", "--workdir", str(tmp_path), "--no-files", "--no-terminal")
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
    assert nothing.stderr.startswith("tui-hpo: error: --no-files: nothing to do")


def test_report_escapes_names_and_drops_stale_figures(tmp_path: Path) -> None:
    from engine.insights.plots import analyse, write_analysis

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = optuna.create_study(study_name="<b>x</b>", storage=url)
    study.optimize(lambda t: t.suggest_float("<i>", 0, 1) + t.suggest_float("y", 0, 1), n_trials=3)
    (tmp_path / "learning_curves.png").write_bytes(b"an earlier run's figure")
    written = write_analysis(study, analyse(study, url), tmp_path)
    report = (tmp_path / "report.html").read_text()
    assert "<b>x</b>" not in report and "&lt;b&gt;x&lt;/b&gt;" in report and "&lt;i&gt;" in report
    assert not (tmp_path / "learning_curves.png").exists()
    assert [name for name, _ in written.skipped] == ["learning_curves"]
