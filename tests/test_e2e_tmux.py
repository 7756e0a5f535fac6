"""End to end, as a person over SSH: the real app in a real terminal (tmux), a sweep started from
the wizard with keys, trials finishing live, quitting while it runs, and attaching again."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None and os.environ.get("CI") != "true",
                                reason="tmux is not installed (run_tests.sh installs it)")


class Terminal:
    def __init__(self, command: str, env: dict[str, str], logs: Path | None = None) -> None:
        self.logs = logs  # the workspace, whose engine output a failure shows
        self.socket = f"tui-hpo-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run([TMUX or "tmux", "-L", self.socket, "new-session", "-d", "-s", "main", "-x", "120", "-y", "40",
                        f"cd {ROOT} && env -u COLUMNS -u LINES {exports} {command}; sleep 30"], check=True)

    def screen(self) -> str:
        out = subprocess.run([TMUX or "tmux", "-L", self.socket, "capture-pane", "-p", "-t", "main"],
                             capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "send-keys", "-t", "main", *keys], check=True)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        engine = "".join(f"\n{p.name}:\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob(".engine-*.out"))) if self.logs else ""
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}{engine}")

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True)


def sweep_state(db: Path) -> tuple[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        state = conn.execute("SELECT state FROM hpo_sweep").fetchone()[0]
        done = conn.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    return state, done


@pytest.fixture
def workdir(tmp_path: Path):
    """The workspace; any engine still running from it is ended afterwards (it outlives the app)."""
    path = tmp_path / "runs"
    yield path
    subprocess.run(["pkill", "-f", str(path)], capture_output=True)


def test_wizard_start_watch_leave_and_attach(workdir: Path) -> None:
    cli = f"{sys.executable} -m tui_hpo.cli"
    # The engine the wizard starts inherits the environment: a short sweep for the test (two
    # epochs, not the quick preset's 100 steps).
    env = {"TUI_HPO__BUDGET__N_TRIALS": "5", "TUI_HPO__TRAIN__EPOCHS": "2", "TUI_HPO__TRAIN__MIN_STEPS": "null",
           "TUI_HPO__RESOURCES__PARALLEL": "1", "TUI_HPO__PRUNER__NAME": "none"}
    term = Terminal(f"{cli} --workdir {workdir}", env, logs=workdir)
    try:
        term.wait_for("No study in this workspace yet")
        term.keys("2")
        term.wait_for("ready to start")
        term.keys("F5")
        term.wait_for("starting in the background", timeout=30)
        screen = term.wait_for("1/5 done", timeout=120)  # a trial finished, live in the table
        assert "best val_f1" in screen
        term.keys("p")  # paused while the keys below are tried, so the sweep is still running when left
        term.wait_for("paused: running trials finish")
        # A trial enqueued with the selected trial's params (the form's prefill) runs in the sweep.
        term.keys("a")
        term.wait_for("queue it")
        term.keys("Enter")
        term.wait_for(" queued: it runs ")
        # The table: a query filter, then a sort (again: reversed) on the column under the cursor.
        term.keys("/")
        term.wait_for("lr < 1e-3 and state == complete")  # the query dialog's example
        term.keys("state == complete", "Enter")
        term.wait_for("trials: state == complete")
        term.keys("s")
        first = "descending" if "descending" in term.wait_for("sorted by") else "ascending"
        term.keys("s")
        term.wait_for({"ascending": "descending", "descending": "ascending"}[first])
        term.keys("/", "C-u", "Enter")  # the filter cleared
        term.wait_for("every trial")
        term.keys("p")
        term.wait_for("resumed: new trials start again")
        term.keys("q")
        term.wait_for("is still running")
        term.keys("l")
        term.wait_for("goes on. Attach again with")
        db = workdir / "hpo.db"
        state, done = sweep_state(db)
        assert state == "running" and done < 5, "quitting the app must not stop the sweep"
    finally:
        term.close()
    attached = Terminal(f"{cli} attach --workdir {workdir}", {}, logs=workdir)
    try:
        attached.wait_for("running")
        screen = attached.wait_for("finished  5/5 done", timeout=180)
        assert "best val_f1" in screen
        attached.keys("q")  # finished: quits at once, no question
    finally:
        attached.close()
    assert sweep_state(workdir / "hpo.db") == ("finished", 5)
    with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
        enqueued = conn.execute("SELECT t.trial_id, t.state FROM trials t JOIN trial_user_attributes a "
                                "USING (trial_id) WHERE a.key = 'enqueued'").fetchall()
        assert [state for _id, state in enqueued] == ["COMPLETE"], "the trial enqueued from the app ran"

        def params(where: str) -> list[tuple]:
            return conn.execute("SELECT param_name, param_value FROM trial_params JOIN trials USING (trial_id) "
                                f"WHERE {where} ORDER BY param_name").fetchall()

        assert params(f"trial_id = {enqueued[0][0]}") == params("number = 0"), "with the selected trial's params"


def test_run_from_a_terminal_names_the_study_and_survives_a_lost_connection(workdir: Path, tmp_path: Path) -> None:
    """`tui-hpo run --config x.yaml` on a terminal: the sweep starts in the background under the
    config's `name:` (not the file's), the app watches it; then the SSH connection drops (the
    terminal goes away: SIGHUP to the app) and the sweep still finishes."""
    config = tmp_path / "x.yaml"
    config.write_text("name: foo\nextends: " + str(ROOT / "tests" / "configs" / "tiny.yaml") + "\n"
                      "train: {epochs: 3}\nbudget: {n_trials: 3}\nresources: {parallel: 1}\n")
    term = Terminal(f"{sys.executable} -m tui_hpo.cli run --config {config} --workdir {workdir}", {}, logs=workdir)
    try:
        screen = term.wait_for("1/3 done", timeout=120)
        assert " foo " in screen, screen
        assert [p.name for p in workdir.iterdir() if p.is_dir()] == ["foo"]
    finally:
        term.close()  # the terminal is gone: tmux hangs up on the app
    deadline = time.time() + 180
    while time.time() < deadline and sweep_state(workdir / "hpo.db")[0] != "finished":
        time.sleep(1)
    assert sweep_state(workdir / "hpo.db") == ("finished", 3), "the sweep must outlive its terminal"
