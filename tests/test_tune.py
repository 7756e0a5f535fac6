"""The Expert tier on a real local Ray (2 CPUs): ASHA stops bad trials, PBT clones and mutates, a
killed engine's sweep resumes with exact counts, and the TUI shows Ray trials as they run. Every
Ray trial lands in the same Optuna study as the Optuna tier's, so each test reads the study."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT, run_cli

pytest.importorskip("ray.tune")
# One local Ray at a time, one after another on one pytest worker: three at once (each with its
# daemons and worker processes) oversubscribe two cores and slow every other test.
pytestmark = pytest.mark.xdist_group("ray")
States = optuna.trial.TrialState
BASE = {
    "train": {"model": "test_resnet", "image_size": 16},
    "data": {"subset": 400},
    "search_space": {"lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}},
    "sampler": {"name": "random", "seed": 0},
    "resources": {"parallel": 2, "batch_multiplier": 1.0, "cpus_per_trial": 1},
}


def write_config(tmp_path: Path, name: str, epochs: int, n_trials: int, scheduler: dict) -> Path:
    config = {**BASE, "name": name, "train": {**BASE["train"], "epochs": epochs}, "scheduler": scheduler,
              "budget": {"n_trials": n_trials}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def command(config: Path, workdir: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(config), "--workdir", str(workdir),
            "--backend", "ray", "--no-tui", *more]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__")}


def sweep(config: Path, workdir: Path, *more: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command(config, workdir, *more), cwd=ROOT, env=environment(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def load(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'hpo.db'}")


def test_asha_stops_bad_trials_and_the_study_reads_like_the_optuna_tiers(tmp_path: Path) -> None:
    config = write_config(tmp_path, "asha", epochs=4, n_trials=6,
                          scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2})
    done = sweep(config, tmp_path)
    assert "Ray Tune" in done.stdout and "finished: 6/6 trials" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr and "Failed to fetch" not in done.stdout + done.stderr
    trials = load(tmp_path, "asha").trials
    assert len(trials) == 6 and all(t.state in (States.COMPLETE, States.PRUNED) for t in trials)
    stopped = [t for t in trials if t.state == States.PRUNED]
    assert stopped, "ASHA stops the trials behind at its rungs"
    for trial in stopped:
        assert len(trial.intermediate_values) < 4
    finished = [t for t in trials if t.state == States.COMPLETE]
    assert all(sorted(t.intermediate_values) == [0, 1, 2, 3] for t in finished)
    assert max(t.value for t in finished) > 0.85, "real training on the digits"
    for trial in trials:
        host, _, pid = trial.user_attrs["worker"].rpartition(":")
        assert host and pid.isdigit(), "the Ray worker that ran it"
        assert trial.user_attrs["ray_trial"]
    assert all(0 < t.user_attrs["epochs"] <= 4 for t in trials)
    events = (tmp_path / "asha" / "engine.log").read_text()
    assert events.count("stopped by the asha scheduler in epoch") == len(stopped)
    summary = run_cli("summary", "--workdir", str(tmp_path), "--study", "asha")
    assert summary.returncode == 0 and "asha" in summary.stdout
    from engine.training.package import read_meta

    best = max(finished, key=lambda t: t.value)
    meta = read_meta(tmp_path / "asha" / "best_model.safetensors")  # the model people use, as the Optuna tier keeps it
    assert meta.meta["trial"] == best.number and meta.meta["value"] == pytest.approx(best.value)
    assert not list((tmp_path / "asha" / "ray" / "packages").iterdir()), "each package kept or dropped"


def test_pbt_clones_and_mutates_and_the_storage_shows_the_lineage(tmp_path: Path) -> None:
    config = write_config(tmp_path, "pbt", epochs=6, n_trials=4,
                          scheduler={"name": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5})
    sweep(config, tmp_path)
    trials = load(tmp_path, "pbt").trials
    assert len(trials) == 4 and all(t.state == States.COMPLETE for t in trials)
    evolved = [t for t in trials if t.user_attrs.get("pbt")]
    assert evolved, "the bottom half clones the top half at each perturbation"
    numbers = {t.number for t in trials}
    for trial in evolved:
        for step in trial.user_attrs["pbt"]:
            assert step["cloned"] in numbers - {trial.number}
            assert 0 < step["epoch"] < 6
        changes = [step["mutated"]["lr"] for step in trial.user_attrs["pbt"] if "lr" in step["mutated"]]
        if changes:  # the params hold the value it trained with last (when inside the space)
            last = changes[-1][1]
            assert trial.params["lr"] == pytest.approx(last) or not 1e-4 <= last <= 3e-2
        assert sorted(trial.intermediate_values) == list(range(6)), "an epoch per report, cloned ones included"
    asyncio.run(lineage_in_the_trial_detail(tmp_path, evolved[0]))


async def lineage_in_the_trial_detail(workdir: Path, trial: optuna.trial.FrozenTrial) -> None:
    """The trial screen says what PBT did to a trial: whose weights, after which epoch, what changed."""
    from textual.widgets import Static

    from tests.test_tui import text_of, wait_for
    from tui_hpo.app import make_app
    from tui_hpo.screens.trial import TrialScreen
    from tui_hpo.widgets.trial_table import TrialTable

    app = make_app(workdir=workdir)
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.screen.query_one(TrialTable)
        await wait_for(pilot, lambda: table.row_count == 4)
        table.select_number(trial.number)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen) and "PBT after epoch" in text_of(
            app.screen.query_one("#trial-header", Static)))
        header = text_of(app.screen.query_one("#trial-header", Static))
        first = trial.user_attrs["pbt"][0]
        assert f"PBT after epoch {first['epoch']}: trial {first['cloned']}'s weights" in header, header


def test_a_killed_engine_resumes_with_exact_counts_and_the_tui_shows_ray_trials_live(tmp_path: Path) -> None:
    from tests.test_tui import text_of, wait_for
    from tui_hpo.app import make_app
    from tui_hpo.widgets.trial_table import TrialTable

    config = write_config(tmp_path, "kill", epochs=12, n_trials=5, scheduler={"name": "fifo"})
    proc = subprocess.Popen(command(config, tmp_path), cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            with contextlib.suppress(Exception):
                running = load(tmp_path, "kill").get_trials(states=(States.RUNNING,))
                if any(len(t.intermediate_values) >= 2 for t in running):
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.3)
        else:
            pytest.fail("no Ray trial reported two epochs in time")

        async def watch() -> None:
            app = make_app(workdir=tmp_path)
            async with app.run_test(size=(200, 50)) as pilot:
                table = app.screen.query_one(TrialTable)
                await wait_for(pilot, lambda: table.row_count >= 1)
                header = text_of(app.screen.query_one("#dash-header", Static))
                assert "kill" in header and "running" in header
                rows = ["".join(s.text for s in table.render_line(y)) for y in range(1, 6)]
                assert any("running" in row.lower() or "▶" in row for row in rows), rows

        from textual.widgets import Static

        asyncio.run(watch())
        # Killed mid-trial, a few epochs in: Tune saved that trial's checkpoint (its experiment
        # state a second ago at most) and the trial has epochs left.
        def mid_trial() -> bool:
            running = load(tmp_path, "kill").get_trials(states=(States.RUNNING,))
            return any(3 <= len(t.intermediate_values) <= 8 for t in running)

        while time.time() < deadline and not mid_trial():
            assert proc.poll() is None
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # the engine only: Ray's processes notice their driver is gone
        proc.wait(timeout=30)
        before = load(tmp_path, "kill")
        interrupted = {t.number for t in before.get_trials(states=(States.RUNNING,))}
        assert interrupted, "the kill caught trials mid-training"
        done = sweep(config, tmp_path, "--resume", "--study", "kill")
        assert "restored" in done.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    trials = load(tmp_path, "kill").trials
    complete = [t for t in trials if t.state == States.COMPLETE]
    assert len(complete) == 5, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state == States.RUNNING]
    resumed = [t for t in complete if t.number in interrupted and "resumed_from_epoch" in t.user_attrs]
    assert resumed, "a trial killed mid-training went on from its checkpoint, not from epoch 1"
    for trial in complete:
        assert sorted(trial.intermediate_values) == list(range(12)), "each epoch once"
