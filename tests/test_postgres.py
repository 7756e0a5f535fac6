"""Several machines on one PostgreSQL server: a sweep started with `tui-hpo run --storage URL` and
two `tui-hpo worker` processes that join it with nothing but the URL and the study's name.

The server is real (tests/pg.py starts one on 127.0.0.1 with a random password), and the workers
are separate processes with workdirs of their own, as on other machines. The same sweep then
serves the password checks: the password must appear in no output, log, event, saved config,
exported file, database row or TUI screen; the masked `***` form is what shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
import pytest
import sqlalchemy as sa

from engine.storage import Store
from tests import pg
from tests.conftest import CONFIGS, ROOT, run_cli

# Module-scoped fixtures (a real sweep, a server): all of this file runs in one test process.
pytestmark = pytest.mark.xdist_group("test_postgres")

N_TRIALS = 10
STUDY = "tiny"
# Short trials (about a second) on a small subset, one thread per process: three training
# processes share the 2-core machines, and more threads than cores would only make them fight.
# Three epochs rather than tiny.yaml's two, so one worker alone cannot finish the sweep before
# the others have started.
SWEEP_ENV = {"TUI_HPO__DATA__SUBSET": "500", "TUI_HPO__TRAIN__EPOCHS": "3",
             "TUI_HPO__RESOURCES__THREADS_PER_WORKER": "1"}
SWEEP_TIMEOUT_S = 240


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.Server]:
    """A PostgreSQL server for the session (or a skip, pg.start_for_test)."""
    server = pg.start_for_test()
    try:
        yield server
    finally:
        pg.stop(server)


@dataclass(frozen=True)
class Sweep:
    url: str
    password: str
    root: Path  # A/ is the engine's workdir, B/ and C/ the joined workers'
    outputs: dict[str, str]  # what each process printed (stdout and stderr together)
    codes: dict[str, int]
    worker_pids: list[int]
    engine_children: dict[int, list[str]]  # the command lines of the processes the engine started

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=STUDY, storage=self.url)


def _start(args: list[str], out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`tui-hpo ARGS` in the background, its output to a file (a pipe nobody reads could fill up)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__")}
    full_env.update(env or {}, COLUMNS="120", PYTHONUNBUFFERED="1")
    with open(out, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "tui_hpo.cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=full_env, cwd=ROOT)


def _descendants(pid: int) -> dict[int, list[str]]:
    """The command lines of a process's children and theirs, as `ps` shows them to any user."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for child in children:
        with contextlib.suppress(psutil.Error):  # gone in between
            cmdline = child.cmdline()
            if cmdline:  # empty while a child is between fork and exec: read it again next time
                found[child.pid] = cmdline
    return found


def _wait_watching(procs: dict[str, subprocess.Popen], watched: int, timeout: float) -> dict[int, list[str]]:
    """Wait for every process; meanwhile record the command lines of `watched`'s children."""
    seen: dict[int, list[str]] = {}
    deadline = time.monotonic() + timeout
    while any(proc.poll() is None for proc in procs.values()):
        assert time.monotonic() < deadline, f"still running after {timeout:g}s"
        seen.update(_descendants(watched))
        time.sleep(0.2)
    return seen


def _wait_for_study(url: str, engine: subprocess.Popen, out: Path) -> None:
    """Until the engine has recorded the sweep (a worker finds nothing to join before that)."""
    store = Store(url, readonly=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if engine.poll() is not None:
                raise AssertionError(f"the engine exited with {engine.returncode}:\n{out.read_text()}")
            try:
                if store.sweep(STUDY) is not None:
                    return
            except sa.exc.DBAPIError:  # our tables are not created yet
                pass
            time.sleep(0.2)
        raise AssertionError("the engine did not create the study in time")
    finally:
        store.close()


@pytest.fixture(scope="module")
def sweep(postgres: pg.Server, tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """One sweep of 10 trials: the engine with one worker of its own, and two workers that join it
    as soon as the study exists (each process loads torch for seconds, so all three get trials)."""
    root = tmp_path_factory.mktemp("pg-sweep")
    logs = tmp_path_factory.mktemp("pg-logs")
    url = postgres.url
    engine = _start(["run", "--storage", url, "--config", str(CONFIGS / "tiny.yaml"), "--n-trials", str(N_TRIALS),
                     "--parallel", "1", "--no-tui", "--workdir", str(root / "A")], logs / "run.out", SWEEP_ENV)
    procs = {"run": engine}
    try:
        _wait_for_study(url, engine, logs / "run.out")
        for name in ("B", "C"):
            procs[f"worker {name}"] = _start(["worker", "--storage", url, "--study", STUDY, "--workdir",
                                              str(root / name), "--device", "cpu", "--threads", "1"],
                                             logs / f"worker-{name}.out")
        children = _wait_watching(procs, engine.pid, SWEEP_TIMEOUT_S)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = {name: (logs / f"{name.replace(' ', '-')}.out").read_text() for name in procs}
    return Sweep(url, postgres.password, root, outputs, {name: proc.returncode for name, proc in procs.items()},
                 [procs["worker B"].pid, procs["worker C"].pid], children)


def test_workers_on_other_machines_share_the_trials(sweep: Sweep) -> None:
    assert sweep.codes == {"run": 0, "worker B": 0, "worker C": 0}, sweep.outputs
    trials = sweep.study().get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * N_TRIALS, "the budget holds across machines"
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))
    by_worker: dict[str, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for trial in trials:
        by_worker[trial.user_attrs["worker"]].append(trial)
    for label, own in by_worker.items():  # a worker runs one trial at a time
        own.sort(key=lambda t: t.datetime_start)
        for before, after in itertools.pairwise(own):
            assert after.datetime_start >= before.datetime_complete, f"{label} ran two trials at once"
    host = socket.gethostname()
    joined = {f"{host}:{pid}" for pid in sweep.worker_pids}
    assert len(by_worker) >= 2 and joined & set(by_worker), f"the joined workers ran no trial: {sorted(by_worker)}"
    store = Store(sweep.url, readonly=True)
    try:
        study_id = store.sweep(STUDY).study_id
        assert len({w["pid"] for w in store.workers_of(study_id)}) == 3
    finally:
        store.close()
    assert "sweep 'tiny' finished: 10/10 trials finished" in sweep.outputs["run"]


def test_optuna_cli_and_summary_read_the_same_url(sweep: Sweep) -> None:
    optuna_cli = Path(sys.executable).parent / "optuna"
    listed = subprocess.run([str(optuna_cli), "trials", "--storage", sweep.url, "--study-name", STUDY, "-f", "json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == N_TRIALS
    labels = {row["user_attrs"]["worker"] for row in rows}
    assert all(re.fullmatch(r".+:\d+", label) for label in labels) and len(labels) >= 2
    summary = run_cli("summary", "--storage", sweep.url, "--json")
    assert summary.returncode == 0, summary.stderr
    report = json.loads(summary.stdout)
    assert report["study"] == STUDY and report["counts"]["COMPLETE"] == N_TRIALS and report["state"] == "finished"


def _leaks(password: str, texts: dict[str, str]) -> list[str]:
    return [name for name, text in texts.items() if password in text]


def test_the_password_never_shows(sweep: Sweep) -> None:
    """Outputs of every command, the logs and files of all three workdirs, every row of every table."""
    a = sweep.root / "A"
    commands = {" ".join(args): run_cli(*args, "--storage", sweep.url, "--workdir", str(a)) for args in
                (("summary",), ("summary", "--json"), ("top",), ("export",))}
    for name, result in commands.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    outputs = {**sweep.outputs, **{name: r.stdout + r.stderr for name, r in commands.items()}}
    assert not _leaks(sweep.password, outputs)
    assert ":***@127.0.0.1" in sweep.outputs["run"], "the sweep's first line names the storage, masked"
    # The engine hands the URL to its workers in their environment: a command line is public.
    assert any("engine.sweep.worker" in " ".join(cmd) for cmd in sweep.engine_children.values())
    assert not _leaks(sweep.password, {str(pid): " ".join(cmd) for pid, cmd in sweep.engine_children.items()})

    files = {str(p): p.read_bytes().decode("latin-1") for p in sweep.root.rglob("*") if p.is_file()}
    assert {"config.yaml", "engine.log", "report.json", "trials.csv", "best_config.yaml"} <= {
        Path(p).name for p in files}
    assert not _leaks(sweep.password, files)

    engine = sa.create_engine(sweep.url)
    try:
        tables = sa.MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            rows = {name: repr(conn.execute(sa.select(table)).all()) for name, table in tables.tables.items()}
            events = conn.execute(sa.text("SELECT message FROM hpo_event")).scalars().all()
    finally:
        engine.dispose()
    assert {"hpo_sweep", "hpo_event", "trials", "trial_user_attributes"} <= set(rows)
    assert not _leaks(sweep.password, rows)
    assert any(":***@" in message for message in events)


def test_a_bad_url_is_not_echoed_either(sweep: Sweep) -> None:
    """Connection errors come from the driver: what reaches the user must not carry the URL whole.
    Nor may a password with an unescaped '@' (SQLAlchemy takes its tail for the host name, which
    the driver's error prints), nor one in a URL whose scheme was forgotten. Checked where every
    command opens the storage: Store (run, worker, the TUI's commands) and open_study (summary,
    top, export...); then once through the command line."""
    from engine.errors import UserError
    from engine.storage import find_study

    wrong = f"wrong{secrets.token_hex(8)}"
    split = sweep.url.replace(f":{sweep.password}@", f":{wrong[:9]}@{wrong[9:]}@")
    bad_urls = (sweep.url.replace(f":{sweep.password}@", f":{wrong}@"), split, f"hpo:{wrong}@{sweep.url.split('@')[1]}")
    for bad_url in bad_urls:
        for opener in (Store, lambda url: find_study(url, STUDY)):
            with pytest.raises(UserError) as caught:
                opener(bad_url)
            assert wrong not in str(caught.value) and wrong[9:] not in str(caught.value)
    result = run_cli("summary", "--storage", split)
    assert result.returncode == 2 and result.stderr.startswith("tui-hpo: error:"), result.stderr
    assert wrong[9:] not in result.stdout + result.stderr and "%40" in result.stderr


def test_mask_url() -> None:
    from engine.storage import mask_url

    assert mask_url("postgresql+psycopg://hpo:s3cret@db:5432/x") == "postgresql+psycopg://hpo:***@db:5432/x"
    assert mask_url("postgresql://hpo:s3c@r/et@db/x") == "postgresql://hpo:***@db/x"  # an unescaped '@' and '/'
    assert mask_url("hpo:s3cret@db/x") == "hpo:***@db/x"  # the scheme forgotten
    assert mask_url("postgresql://hpo@db/x?sslmode=require&password=s3cret") == \
        "postgresql://hpo@db/x?sslmode=require&password=***"
    for unchanged in ("sqlite:////tmp/hpo.db", "sqlite:////tmp/a:b@c/hpo.db", "postgresql://hpo@db/x"):
        assert mask_url(unchanged) == unchanged


def _screen_text(app: object) -> str:
    """The screen as text: the SVG screenshot without its markup (what a person would read)."""
    svg = app.export_screenshot()  # type: ignore[attr-defined]
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def test_the_tui_shows_the_masked_url(sweep: Sweep) -> None:
    from textual.widgets import DataTable, Static

    from tui_hpo.app import make_app
    from tui_hpo.screens.analysis import AnalysisScreen
    from tui_hpo.screens.trial import TrialScreen
    from tui_hpo.widgets.trial_table import TrialTable

    async def until(pilot: object, condition: object, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"not in time; worker errors: {pilot.app.worker_errors}"  # type: ignore[attr-defined]
            await pilot.pause(0.1)  # type: ignore[attr-defined]

    screens: dict[str, str] = {}

    async def scenario() -> None:
        app = make_app(workdir=sweep.root / "A", storage=sweep.url, study=STUDY, mode="dashboard")
        async with app.run_test(size=(140, 45)) as pilot:
            table = app.screen.query_one(TrialTable)
            await until(pilot, lambda: table.row_count == N_TRIALS)
            screens["dashboard"] = _screen_text(app)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TrialScreen))
            header = app.screen.query_one("#trial-header", Static)
            await until(pilot, lambda: "trial" in str(header.content))
            screens["trial"] = _screen_text(app)
            await pilot.press("escape", "5")
            studies = app.screen.query_one(DataTable)
            await until(pilot, lambda: studies.row_count == 1)
            screens["studies"] = _screen_text(app)
            await pilot.press("6")
            analysis = app.screen
            assert isinstance(analysis, AnalysisScreen)
            await until(pilot, lambda: analysis.analysis is not None)
            screens["analysis"] = _screen_text(app)
            for key, name in (("1", "system"), ("2", "wizard"), ("question_mark", "help")):
                await pilot.press(key)
                await pilot.pause(0.5)
                screens[name] = _screen_text(app)
            screens["errors"] = "\n".join(app.worker_errors)
            screens["title"] = f"{app.title} {app.sub_title}"

    asyncio.run(scenario())
    assert not _leaks(sweep.password, screens)
    assert ":***@127.0.0.1" in screens["studies"], screens["studies"]


def test_an_engine_started_by_the_tui_gets_the_url_unseen(sweep: Sweep) -> None:
    """The TUI starts the engine as a detached process: the URL goes in its environment, not on
    its command line. Asked to resume a study the storage does not hold, the engine says so at
    once, having looked in PostgreSQL (with no URL it would have made WORKDIR/hpo.db instead).
    The engine's own workers get the URL the same way: see test_the_password_never_shows."""
    from engine.storage import Workspace
    from tui_hpo.launch import RunArgs, start_engine

    workdir = sweep.root / "E"
    engine = start_engine(RunArgs(resume=True), Workspace(workdir, sweep.url), "elsewhere")
    try:
        code = engine.popen.wait(timeout=120)
    finally:
        if engine.exited() is None:
            engine.popen.kill()
    output = engine.output.read_text()
    assert code == 2 and "no sweep named 'elsewhere' in this storage" in output, output
    assert not (workdir / "hpo.db").exists()
    assert not _leaks(sweep.password, {"command line": " ".join(engine.popen.args), "output": output})
