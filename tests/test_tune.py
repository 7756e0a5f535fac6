"""The Expert tier on real Ray (2 CPUs). One ASHA sweep on the local Ray tui-hpo starts, watched
live in the TUI, its engine killed mid-trial and resumed with exact counts. Then a Ray cluster
started as users start theirs (`ray start --head`), which two sweeps join by `ray.address`: a
PBT sweep whose trials clone and mutate, and ASHA over a program's trials with the study in
PostgreSQL. Every Ray trial lands in the same Optuna study as the Optuna tier's: each test reads it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.conftest import ROOT, invoke

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


def write_config(tmp_path: Path, name: str, epochs: int, n_trials: int, scheduler: dict, parallel: int = 2,
                 **more: Any) -> Path:
    config = {**BASE, "name": name, "train": {**BASE["train"], "epochs": epochs}, "scheduler": scheduler,
              "budget": {"n_trials": n_trials}, "resources": {**BASE["resources"], "parallel": parallel}, **more}
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


def test_asha_sweep_killed_mid_trial_resumes_exactly_and_reads_like_the_optuna_tiers(tmp_path: Path) -> None:
    """One ASHA sweep: the engine is killed a few epochs into a trial; `--resume` restores the
    experiment, the TUI shows its Ray trials live, and it ends with exactly the budget; ASHA stopped
    the trials behind at its rungs; the study, `summary` and the kept model read as the Optuna tier's."""
    from textual.widgets import Static

    from tests.test_tui import text_of, wait_for
    from tui_hpo.app import make_app
    from tui_hpo.widgets.trial_table import TrialTable

    # One trial at a time (one Ray worker to start per run: the PBT sweep trains two at once).
    epochs, n_trials = 10, 4
    # Epochs of half a second or so (1,000 images), so that Tune has saved the trial's first
    # checkpoint (its first epoch's, under ASHA) in its experiment's state (about once a second)
    # before the kill, five epochs in.
    config = write_config(tmp_path, "asha", epochs=epochs, n_trials=n_trials, parallel=1,
                          scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 2},
                          data={"subset": 1000})
    proc = subprocess.Popen(command(config, tmp_path), cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)

    def running() -> list[optuna.trial.FrozenTrial]:
        with contextlib.suppress(Exception):  # the study may not exist yet
            return load(tmp_path, "asha").get_trials(states=(States.RUNNING,))
        return []

    def epochs_running() -> list[int]:
        """Each running trial's epochs so far: one quick query, so that a poll never misses the
        few seconds in which a trial is a few epochs in (loading the study takes longer under load)."""
        with contextlib.suppress(sqlite3.Error), contextlib.closing(
                sqlite3.connect(f"file:{tmp_path / 'hpo.db'}?mode=ro", uri=True, timeout=1)) as db:
            return [n for (n,) in db.execute(
                "SELECT COUNT(v.trial_id) FROM trials t LEFT JOIN trial_intermediate_values v "
                "ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING' GROUP BY t.trial_id")]
        return []

    def wait(condition, what: str) -> None:
        while time.time() < deadline and not condition():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert condition(), f"timed out waiting for {what}"

    async def watch(resumed: subprocess.Popen, before: int) -> None:
        """The TUI on the resumed sweep: its Ray trials live, the table growing as Tune starts them."""
        app = make_app(workdir=tmp_path)
        async with app.run_test(size=(200, 50)) as pilot:
            table = app.screen.query_one(TrialTable)
            await wait_for(pilot, lambda: table.row_count >= before, timeout=60)

            def a_running_row() -> bool:  # between two trials there may be none for a moment
                rows = ["".join(s.text for s in table.render_line(y)) for y in range(1, 10)]
                return any(" running " in row for row in rows)

            await wait_for(pilot, a_running_row, timeout=60)
            assert "running" in text_of(app.screen.query_one("#dash-header", Static))
            await wait_for(pilot, lambda: table.row_count > before or resumed.poll() is not None, timeout=120)
            assert table.row_count > before, "the trials the resumed sweep started, shown as they started"

    resumed = None
    try:
        # Killed mid-trial, a few epochs in: Tune saved that trial's checkpoint in its experiment
        # state, and the trial has epochs left. The first trial always gets
        # there (ASHA stops none at a rung it reaches first), and the trials after it remain.
        deadline = time.time() + 240
        wait(lambda: any(5 <= n < epochs - 1 for n in epochs_running()), "a trial a few epochs in")
        os.kill(proc.pid, signal.SIGKILL)  # the engine only: Ray's processes notice their driver is gone
        proc.wait(timeout=30)
        interrupted = {t.number for t in running()}
        assert interrupted, "the kill caught trials mid-training"
        before = len(load(tmp_path, "asha").trials)
        assert before < n_trials
        out, err = tmp_path / "resume.out", tmp_path / "resume.err"  # files: a full pipe would block it
        with out.open("w") as stdout_file, err.open("w") as stderr_file:
            resumed = subprocess.Popen(command(config, tmp_path, "--resume", "--study", "asha"), cwd=ROOT,
                                       env=environment(), stdout=stdout_file, stderr=stderr_file,
                                       start_new_session=True)
        asyncio.run(watch(resumed, before))
        resumed.wait(timeout=300)
        stdout, stderr = out.read_text(), err.read_text()
        assert resumed.returncode == 0, stdout[-3000:] + stderr[-3000:]
    finally:
        for started in (proc, resumed):
            with contextlib.suppress(ProcessLookupError, AttributeError):
                os.killpg(started.pid, signal.SIGKILL)
    assert "restored" in stdout and f"finished: {n_trials}/{n_trials} trials" in stdout
    assert "Traceback" not in stdout + stderr and "Failed to fetch" not in stdout + stderr
    trials = load(tmp_path, "asha").trials
    finished = [t for t in trials if t.state in (States.COMPLETE, States.PRUNED)]
    assert len(finished) == n_trials and not [t for t in trials if t.state == States.RUNNING], \
        [(t.number, t.state.name) for t in trials]
    resumed = [t for t in finished if t.number in interrupted and "resumed_from_epoch" in t.user_attrs]
    assert resumed, "a trial killed mid-training went on from its checkpoint, not from epoch 1"
    stopped = [t for t in finished if t.state == States.PRUNED]
    assert stopped, "ASHA stops the trials behind at its rungs"
    assert all(len(t.intermediate_values) < epochs for t in stopped)
    # Every trial may end PRUNED: after a restore ASHA's rungs hold what the killed run reported
    # past its last checkpoint, and a resumed trial is measured against those too.
    complete = [t for t in finished if t.state == States.COMPLETE]
    assert all(sorted(t.intermediate_values) == list(range(epochs)) for t in complete), "each epoch once"
    assert max(max(t.intermediate_values.values()) for t in finished) > 0.85, "real training on the digits"
    for trial in finished:
        host, _, pid = trial.user_attrs["worker"].rpartition(":")
        assert host and pid.isdigit(), "the Ray worker that ran it"
        assert trial.user_attrs["ray_trial"] and 0 < trial.user_attrs["epochs"] <= epochs
    events = (tmp_path / "asha" / "engine.log").read_text()
    assert events.count("stopped by the asha scheduler in epoch") == len(stopped)
    assert "Failed to fetch metrics" not in events, "Tune's warning about result files nobody writes"
    assert "Failed to restore" not in events, "Tune's state, kept whole through the kill (engine.tune.state)"
    summary = invoke("summary", "--workdir", str(tmp_path), "--study", "asha")
    assert summary.returncode == 0 and "asha" in summary.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray cluster of one node, started with Ray's own CLI as users start theirs; its address."""
    ray = str(Path(sys.executable).parent / "ray")
    with socket.socket() as free:  # not Ray's 6379, which a cluster of the user's may hold
        free.bind(("", 0))
        port = free.getsockname()[1]
    started = subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--num-gpus", "0",
                              "--include-dashboard", "false", "--disable-usage-stats"], capture_output=True,
                             text=True, timeout=120,
                             # Its trials at the priority of the other tests' training processes: at
                             # Ray's default (nice 15) three tests beside it starve them many times over.
                             env={**environment(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"})
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield "auto"  # the cluster this machine is part of: the one `ray start` just started
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def test_pbt_on_a_cluster_clones_and_mutates_and_the_storage_shows_the_lineage(tmp_path: Path, cluster: str) -> None:
    # A population of two, synchronous: at the perturbation (epoch 2) the one behind clones the
    # one ahead, whatever the order the two get there in.
    config = write_config(tmp_path, "pbt", epochs=4, n_trials=2,
                          scheduler={"name": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5,
                                     "synch": True}, ray={"address": cluster})
    done = sweep(config, tmp_path)
    assert f"on the Ray cluster at {cluster}" in done.stdout, "it joined the cluster, not a Ray of its own"
    trials = load(tmp_path, "pbt").trials
    assert len(trials) == 2 and all(t.state == States.COMPLETE for t in trials)
    evolved = [t for t in trials if t.user_attrs.get("pbt")]
    steps = sorted(step["epoch"] for t in evolved for step in t.user_attrs["pbt"])
    assert steps == [2], "one clone at the perturbation"
    numbers = {t.number for t in trials}
    for trial in evolved:
        for step in trial.user_attrs["pbt"]:
            assert step["cloned"] in numbers - {trial.number}
            assert step["epoch"] == 2, "a perturbation every 2 epochs"
        changes = [step["mutated"]["lr"] for step in trial.user_attrs["pbt"] if "lr" in step["mutated"]]
        if changes:  # the params hold the value it trained with last (when inside the space)
            last = changes[-1][1]
            assert trial.params["lr"] == pytest.approx(last) or not 1e-4 <= last <= 3e-2
        assert sorted(trial.intermediate_values) == list(range(4)), "an epoch per report, cloned ones included"
    events = (tmp_path / "pbt" / "engine.log").read_text()
    for trial in trials:  # its start, and its restart after the perturbation; none after its last epoch
        assert events.count(f"trial {trial.number} started as Ray trial") == 2, events
    asyncio.run(lineage_in_the_trial_detail(tmp_path, evolved[0]))
    from engine.training.package import read_meta

    best = max(trials, key=lambda t: t.value)
    meta = read_meta(tmp_path / "pbt" / "best_model.safetensors")  # the model people use, as the Optuna tier keeps it
    assert meta.meta["trial"] == best.number and meta.meta["value"] == pytest.approx(best.value)
    assert meta.meta["params"]["lr"] == pytest.approx(best.params["lr"]), "the values it trained with last"
    assert not list((tmp_path / "pbt" / "ray" / "packages").iterdir()), "each package kept or dropped"


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
        await wait_for(pilot, lambda: table.row_count == 2)
        table.select_number(trial.number)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen) and "PBT after epoch" in text_of(
            app.screen.query_one("#trial-header", Static)))
        header = text_of(app.screen.query_one("#trial-header", Static))
        first = trial.user_attrs["pbt"][0]
        assert f"PBT after epoch {first['epoch']}: trial {first['cloned']}'s weights" in header, header


# A training program of the user's: a score per epoch, best at lr = 0.01; trial 2 diverges.
PROGRAM = """
import json, math, os, sys, time
lr = float(os.environ["TUI_HPO_PARAM_LR"])
out = os.environ["TUI_HPO_OUTPUT_DIR"]
with open(os.path.join(out, "pids"), "a") as fh:
    fh.write(f"{os.getpid()}\\n")
if os.environ["TUI_HPO_TRIAL"] == "2":
    print("loss is nan: diverged", file=sys.stderr)
    sys.exit(3)
quality = 1 - abs(math.log10(lr) + 2) / 3
for epoch in range(6):
    time.sleep(0.3)
    print(json.dumps({"epoch": epoch, "score": quality * (epoch + 1) / 6, "loss": 1 - quality}), flush=True)
"""


def test_asha_on_a_cluster_with_postgresql_stops_a_programs_trials_and_records_them(tmp_path: Path,
                                                                                      cluster: str) -> None:
    """`objective.command` on Ray, the study in PostgreSQL (as across a cluster's machines): the
    program's reports reach ASHA, which stops the trials behind; the study holds the program's own
    metrics per step, its log, command line and exit code; a program that fails is a failed trial
    with its stderr; no program outlives its trial."""
    from engine.storage import Store
    from tests import pg

    server = pg.start_for_test()
    try:
        (tmp_path / "prog.py").write_text(PROGRAM.lstrip())
        config = tmp_path / "program.yaml"
        config.write_text(yaml.safe_dump({
            "name": "program", "backend": "ray", "ray": {"address": cluster},
            "objective": {"command": ["{python}", "prog.py"], "metric": "score", "direction": "maximize",
                          "cwd": str(tmp_path)},
            "search_space": {"lr": {"low": 1.0e-4, "high": 1.0, "log": True}},
            "sampler": {"name": "random", "seed": 0}, "budget": {"n_trials": 6},
            "scheduler": {"name": "asha", "max_t": 6, "grace_period": 1, "reduction_factor": 2},
            "resources": {"parallel": 2, "cpus_per_trial": 1}}))
        sweep(config, tmp_path / "runs", "--storage", server.url)
        study = optuna.load_study(study_name="program", storage=server.url)
        trials = sorted(study.trials, key=lambda t: t.number)
        epochs = Store(server.url).epochs_of(next(t for t in trials if t.state == States.COMPLETE)._trial_id)
    finally:
        pg.stop(server)
    states = [t.state for t in trials]
    assert States.RUNNING not in states and len([t for t in trials if t.state != States.FAIL]) == 6, states
    assert [t.number for t in trials if t.state == States.FAIL] == [2], "only the program that failed"
    failed = trials[2]
    assert "exit code 3" in failed.user_attrs["fail_reason"] and failed.user_attrs["exit_code"] == 3
    assert "loss is nan: diverged" in failed.user_attrs["fail_reason"], "the end of its stderr"
    stopped = [t for t in trials if t.state == States.PRUNED]
    assert stopped and all(len(t.intermediate_values) < 6 for t in stopped), "ASHA stops the trials behind"
    complete = [t for t in trials if t.state == States.COMPLETE]
    for trial in complete:
        assert trial.value == pytest.approx(trial.intermediate_values[5]), "the last score it reported"
        assert trial.user_attrs["exit_code"] == 0 and trial.user_attrs["metrics"]["loss"] >= 0
        assert "prog.py" in trial.user_attrs["command"] and Path(trial.user_attrs["log"]).is_file()
    assert [e["epoch"] for e in epochs] == list(range(6)) and all("loss" in e for e in epochs), \
        "the program's own metrics per step"
    for trial in trials:
        pids = (tmp_path / "runs" / "program" / "trials" / str(trial.number) / "pids").read_text().split()
        assert pids and not any(_running(int(pid)) for pid in pids), f"trial {trial.number}'s program outlived it"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
