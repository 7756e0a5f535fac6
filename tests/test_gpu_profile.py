"""`tui-hpo gpu profile`: real profiles of the tiny config and of a tiny sweep's trial, on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, run_cli

# One real sweep serves the trial tests: all of this file runs in one test process.
pytestmark = pytest.mark.xdist_group("test_gpu_profile")

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
PHASES = {"data", "forward", "backward", "optimizer"}


def _trace(folder: Path) -> Path:
    """The one trace file in `folder`."""
    [trace] = list(folder.glob("*.json"))
    return trace


def test_profile_of_a_config(tmp_path: Path) -> None:
    result = run_cli("gpu", "profile", "--config", str(TINY), "--workdir", str(tmp_path), "--steps", "3", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["model"], out["batch_size"], out["image_size"], out["steps"]) == ("test_resnet", 64, 16, 3)
    on_cuda = out["device"].startswith("cuda")
    ops = out["ops"]
    assert 0 < len(ops) <= 15 and all(op["calls"] >= 1 for op in ops)
    assert any("conv" in op["name"] for op in ops), [op["name"] for op in ops]
    assert not PHASES & {op["name"] for op in ops}, "the phase labels are not operators"
    key = "self_device_ms" if on_cuda else "self_cpu_ms"
    assert [op[key] for op in ops] == sorted((op[key] for op in ops), reverse=True)
    if not on_cuda:
        assert all(op["self_device_ms"] is None for op in ops)
        assert any("CUDA kernels are not measured" in note for note in out["notes"])
    phases = out["phases"]
    assert set(phases) == PHASES and math.isclose(sum(phases.values()), 1, abs_tol=1e-3)
    assert all(phases[p] > 0 for p in ("forward", "backward", "optimizer")), phases
    assert out["step_ms"] > 0 and out["time_went"]
    trace = Path(out["trace"])
    assert trace == _trace(tmp_path / "tiny" / "profiles") and trace.name.startswith("tiny-")
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert PHASES.issubset(names), "the phases are labelled in the trace"
    assert len({n for n in names if str(n).startswith("ProfilerStep#")}) == 3, "warm-up steps are not recorded"


def test_human_output_names_the_trace(tmp_path: Path) -> None:
    result = run_cli("gpu", "profile", "--config", str(TINY), "--workdir", str(tmp_path), "--steps", "2")
    assert result.returncode == 0, result.stderr
    trace = _trace(tmp_path / "tiny" / "profiles")
    assert f"trace: {trace}" in result.stdout
    assert "perfetto" in result.stdout and "where the time went:" in result.stdout
    assert "self CPU" in result.stdout and "aten::" in result.stdout


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-trial sweep of one epoch, whose trial trains with batch 48 (the config's own
    batch is 64, so a profile that ignored the trial's params would show 64)."""
    workdir = tmp_path_factory.mktemp("profile") / "runs"
    result = run_cli("run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui", "--n-trials", "1",
                     env={"TUI_HPO__SEARCH_SPACE__BATCH_SIZE__CHOICES": "[48]", "TUI_HPO__TRAIN__EPOCHS": "1"})
    assert result.returncode == 0, result.stderr
    return workdir


def test_profile_of_a_trial_uses_its_params(swept: Path) -> None:
    trial = optuna.load_study(study_name="tiny", storage=f"sqlite:///{swept / 'hpo.db'}").trials[0]
    assert trial.params["batch_size"] == 48
    result = run_cli("gpu", "profile", "--study", "tiny", "--trial", "0", "--workdir", str(swept), "--steps", "2",
                     "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["model"], out["batch_size"]) == ("test_resnet", 48)
    assert out["source"] == "trial 0 of 'tiny'" and out["ops"]
    trace = Path(out["trace"])
    assert trace == _trace(swept / "tiny" / "profiles") and trace.name.startswith("trial-0-")


def _refused(*args: str) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    result = run_cli("gpu", "profile", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tui-hpo: error: ")
    return line


def test_bad_requests_are_one_line(swept: Path, tmp_path: Path) -> None:
    workdir = ["--workdir", str(swept)]
    assert "--trial" in _refused("--study", "tiny", "--trial", "99", *workdir)
    assert "--trial" in _refused("--study", "tiny", *workdir)
    assert "--study" in _refused("--study", "nope", "--trial", "0", *workdir)
    assert "--config" in _refused(*workdir)
    assert "no such config file" in _refused("--config", str(tmp_path / "missing.yaml"), *workdir)
    # A trial asked for but never started has no params to train with.
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{swept / 'hpo.db'}")
    study.ask()
    line = _refused("--study", "tiny", "--trial", "1", *workdir)
    assert "--trial" in line and "no params" in line
