"""Crashes lose nothing: the engine SIGKILLed again and again, a worker killed mid-trial, SIGTERM,
and running out of memory. Every test runs the real engine on the embedded digits."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, invoke, run_cli, tight_memory

States = optuna.trial.TrialState
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
FIXED_BATCH = {"TUI_HPO__SEARCH_SPACE__BATCH_SIZE": "null", "TUI_HPO__TRAIN__BATCH_SIZE": "128"}


def load(workdir: Path) -> optuna.Study:
    """The study, read through a read-only connection: watching must not write to the database."""
    storage = optuna.storages.RDBStorage(f"sqlite:///file:{workdir / 'hpo.db'}?mode=ro&uri=true",
                                         skip_table_creation=True)
    return optuna.load_study(study_name="tiny", storage=storage)


def integrity(workdir: Path) -> str:
    with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def start(workdir: Path, n_trials: int, parallel: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui",
            "--n-trials", str(n_trials), "--parallel", str(parallel)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__")} | FIXED_BATCH | (extra_env or {})
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def completed(study: optuna.Study) -> dict[int, float]:
    return {t.number: t.value for t in study.trials if t.state == States.COMPLETE}


def lineage(trial: optuna.trial.FrozenTrial) -> int:
    """The first trial of a chain of reruns (itself when it is not a rerun)."""
    return int(trial.user_attrs.get("retry_of", trial.number))


KILLS = 4  # the group and the engine alone, each once while training and once while starting up


def test_sigkill_again_and_again_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL at random moments, alternately the whole process group (a lost machine) and the
    engine alone (its workers must notice and stop); each time the same command resumes. The
    kills while training must land on running trials: those trials end failed and run again."""
    workdir, n_trials = tmp_path / "runs", 6
    rng = random.Random(20261124)
    kept: dict[int, float] = {}
    hit: list[set[int]] = []  # per kill while training: the trials of this run that were running

    def running_now(since: datetime) -> set[int]:
        try:
            return {t.number for t in load(workdir).trials
                    if t.state == States.RUNNING and "worker" in t.user_attrs and t.datetime_start > since}
        except Exception:
            return set()

    def training_or_done(proc: subprocess.Popen, since: datetime) -> bool:
        """A trial of this run is training (not one the last kill left RUNNING), or the run ended."""
        if proc.poll() is not None:
            return True
        try:
            return any(t.state == States.RUNNING and "worker" in t.user_attrs and t.datetime_start > since
                       for t in load(workdir).trials)
        except Exception:  # no study yet
            return False

    for cycle in range(KILLS):
        since = datetime.now()
        # Two workers while training (both must stop when the engine alone dies), one while starting up.
        proc = start(workdir, n_trials, parallel=2 if cycle < 2 else 1, extra_env={"TUI_HPO__BUDGET__MAX_RETRIES": "3"})
        if cycle >= 2:  # while starting up: the group, then the engine alone
            time.sleep(rng.uniform(0.2, 2.0))
        else:  # while training: mid-epoch, between trials, while a trial is told
            wait_until(lambda proc=proc, since=since: training_or_done(proc, since), 90, "a trial to start")
            time.sleep(rng.uniform(0.0, 1.5))
            hit.append(running_now(since))
        with contextlib.suppress(ProcessLookupError):  # the run may have finished the budget already
            if cycle % 2 == 0:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Orphaned workers stop by themselves within seconds (they watch their engine).
        wait_until(lambda pid=proc.pid: not group_alive(pid), 30, "the killed engine's workers to exit")
        if not (workdir / "hpo.db").exists():
            continue
        assert integrity(workdir) == "ok"
        try:
            now = completed(load(workdir))
        except KeyError:  # killed before the study existed
            continue
        for number, value in kept.items():
            assert now[number] == value, f"cycle {cycle}: trial {number} lost or changed"
        kept = now
    final = run_cli("run", "--config", str(TINY), "--workdir", str(workdir), "--no-tui", "--n-trials", str(n_trials),
                    "--parallel", "2", env=FIXED_BATCH | {"TUI_HPO__BUDGET__MAX_RETRIES": "3"})
    assert final.returncode == 0, final.stderr
    study = load(workdir)
    done = [t for t in study.trials if t.state in (States.COMPLETE, States.PRUNED)]
    assert len(done) == n_trials, "exactly n_trials finished trials"
    assert not [t for t in study.trials if t.state in (States.RUNNING, States.WAITING)]
    for number, value in kept.items():
        assert study.trials[number].value == value
    lineages = [lineage(t) for t in done]
    assert len(lineages) == len(set(lineages)), "a rerun and its original both finished"
    assert integrity(workdir) == "ok"
    assert all(t.value > 0.3 for t in done), "real training, real accuracy"
    reruns = [t for t in study.trials if "retry_of" in t.user_attrs]
    failed = [t for t in study.trials if t.state == States.FAIL]
    # A trial seen running a moment before a kill ends failed and runs again with the same params
    # (or, rarely, finished in that moment). Each kill while training must have hit at least one.
    retried = {int(t.user_attrs["retry_of"]) for t in reruns}
    landed = [running for running in hit if any(study.trials[n].state == States.FAIL for n in running)]
    assert len(landed) >= len(hit) - 1, f"kills while training that hit no running trial: {hit}"
    for running in landed:
        for number in running:
            trial = study.trials[number]
            assert trial.state == States.COMPLETE or lineage(trial) in retried or number in retried
    print(f"\nfigures: {KILLS} SIGKILLs ({len(landed)} of {len(hit)} while training landed on running trials), "
          f"{len(done)}/{n_trials} finished, {len(failed)} trials failed by a kill "
          f"({sum(t.user_attrs.get('fail_reason') == 'interrupted' for t in failed)} stopped by their orphaned "
          f"worker), {len(reruns)} reruns, {len(kept)} finished trials checked after every kill, 0 lost, "
          "integrity ok")


def test_a_worker_killed_mid_trial_is_rerun_with_the_same_params(tmp_path: Path) -> None:
    workdir = tmp_path / "runs"
    proc = start(workdir, n_trials=3, parallel=1, extra_env={"TUI_HPO__TRAIN__EPOCHS": "6"})

    def running_trial() -> tuple[int, str] | None:
        """A trial in its first two epochs: several epochs to go, so it is still training when
        its worker is killed a moment later."""
        try:
            for t in load(workdir).trials:
                if t.state == States.RUNNING and "worker" in t.user_attrs and len(t.intermediate_values) < 2:
                    return t.number, t.user_attrs["worker"]
        except Exception:  # the study is still being created
            return None
        return None

    wait_until(lambda: running_trial() is not None, 90, "a running trial")
    number, worker = running_trial()  # type: ignore[misc]
    victim_params = load(workdir).trials[number].params
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    study = load(workdir)
    assert study.trials[number].state == States.FAIL
    assert study.trials[number].user_attrs["fail_reason"] == "worker died"
    reruns = [t for t in study.trials if t.user_attrs.get("retry_of") == number]
    assert len(reruns) == 1 and reruns[0].params == victim_params and reruns[0].state == States.COMPLETE
    assert reruns[0].system_attrs["failed_trial"] == number  # Optuna's own retry attributes
    assert len([t for t in study.trials if t.state == States.COMPLETE]) == 3
    summary = invoke("summary", "--workdir", str(workdir))
    assert f"#{reruns[0].number} of #{number}" in summary.stdout
    with sqlite3.connect(f"file:{workdir / 'hpo.db'}?mode=ro", uri=True) as conn:
        events = [m for (m,) in conn.execute("SELECT message FROM hpo_event WHERE kind = 'worker'")]
    assert any("died (signal 9): worker" in m and "restarted as pid" in m for m in events), events


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_out_of_memory_retries_with_half_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection on the CPU: from the second epoch on, any training batch above 32 images
    raises MemoryError (as a CUDA OOM would), so each attempt has written its first epoch's row
    before it fails. The trial goes on with the same effective batch and finishes, and its epoch
    rows are those of the attempt that fitted. The next trial of the same shape starts at the
    batch that fitted, without running out of memory again."""
    from engine.storage import Store, default_url
    from engine.sweep.engine import Engine, create_or_resume
    from engine.sweep.resolve import resolve_run
    from engine.sweep.worker import Worker

    resolved = resolve_run(None, str(TINY), {"budget": {"n_trials": 2},
                                             "search_space": {"batch_size": {"choices": [128]}}})
    url = default_url(tmp_path)
    Engine(resolved, url, tmp_path, "tiny", reporter=None).prepare()  # the data's settings, as `run` sets them
    create_or_resume(resolved.config, url, "tiny", tmp_path)
    seen = tight_memory(monkeypatch)
    Worker(url, "tiny", tmp_path, "cpu", 0, threading.Event()).run()
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [States.COMPLETE, States.COMPLETE], \
        [t.user_attrs.get("fail_reason") for t in study.trials]
    store = Store(url)
    first, second = study.trials
    assert first.user_attrs["oom_retries"] == [{"batch_size": 64, "accum_steps": 2},
                                               {"batch_size": 32, "accum_steps": 4}]
    assert "oom_retries" not in second.user_attrs, "the second trial started where the first fitted"
    for trial in study.trials:
        assert trial.params["batch_size"] == 128
        assert trial.value > 0.3
        rows = store.epochs_of(trial._trial_id)
        assert [(r["fold"], r["epoch"]) for r in rows] == [(0, 0), (0, 1)]
        assert rows[-1]["val_f1"] == pytest.approx(trial.value)
    assert (128, 1, 1) in seen and (64, 2, 1) in seen and (32, 4, 1) in seen
    assert seen.count((128, 1, 0)) == 1, "batch 128 was tried once, by the first trial"
    events = [e["message"] for e in store.events_of(1)]
    assert "trial 1: starts at batch 32 x 4 accumulation steps: batch 128 ran out of memory here before " \
           "(same effective batch)" in events
    summary = invoke("summary", "--workdir", str(tmp_path))
    assert "went on with batch 32 x 4 accumulation steps" in summary.stdout


def test_ctrl_c_during_a_database_write_does_not_wait_on_the_engine_s_own_lock(tmp_path: Path) -> None:
    """A Ctrl-C can land while the engine is inside a write transaction (SQLite's write lock held,
    here by another connection standing in for the interrupted code). The handler writes nothing:
    a write there waits out the whole busy timeout, 60 s, on a lock only the code it interrupted
    can release (seen in CI as an engine that ignored Ctrl-C for a minute). The supervising loop
    records the stop once the lock is free."""
    from engine.storage import Store, default_url
    from engine.storage.states import SweepState
    from engine.sweep.engine import Engine, create_or_resume
    from engine.sweep.resolve import resolve_run

    url = default_url(tmp_path)
    engine = Engine(resolve_run(None, str(TINY), {}), url, tmp_path, "tiny", reporter=None)
    engine.study = create_or_resume(engine.config, url, "tiny", tmp_path)
    engine.store = Store(url)
    lock = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    handler = threading.Thread(target=engine._on_signal, args=(signal.SIGINT, None), daemon=True)
    handler.start()
    handler.join(timeout=5)
    assert not handler.is_alive(), "the signal handler waits on the database's write lock"
    lock.execute("ROLLBACK")
    assert engine.store.sweep_state(engine.study.study_id) == SweepState.RUNNING
    engine._record_stop()
    assert engine.store.sweep_state(engine.study.study_id) == SweepState.STOPPING


def test_a_second_signal_stops_at_once_and_consistently(tmp_path: Path) -> None:
    """Workers that cannot stop (frozen with SIGSTOP, as a wedged CUDA call would leave them): the
    first signal (SIGTERM, as `kill` or systemd sends) asks them and would wait out the grace
    period; the second (Ctrl-C) kills them at once. Their trials end 'interrupted' and are queued
    again without using up a retry. (test_sweep's Ctrl-C test lets the workers stop by themselves.)"""
    import psutil

    from engine.sweep.engine import STOP_GRACE_S

    workdir = tmp_path / "runs"
    proc = start(workdir, n_trials=4, parallel=2, extra_env={"TUI_HPO__TRAIN__EPOCHS": "40"})

    def both_running() -> bool:
        try:
            return sum(t.state == States.RUNNING and "worker" in t.user_attrs for t in load(workdir).trials) == 2
        except Exception:
            return False

    wait_until(both_running, 120, "two running trials")
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    for worker in workers:
        worker.suspend()
    stopped_at = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(1.0)
    assert proc.poll() is None, "frozen workers: the first signal waits for them"
    os.kill(proc.pid, signal.SIGINT)  # the second Ctrl-C: workers are killed, not asked
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.time() - stopped_at < STOP_GRACE_S / 2, "the second Ctrl-C must not wait out the grace period"
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert "Traceback" not in err
    study = load(workdir)
    assert not [t for t in study.trials if t.state == States.RUNNING]
    failed = [t for t in study.trials if t.state == States.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["fail_reason"] == "interrupted" for t in failed)
    queued = [t for t in study.trials if t.state == States.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in failed)
    assert all(t.user_attrs["retries"] == 0 for t in queued), "a Ctrl-C uses up no retry"
    assert integrity(workdir) == "ok"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_worker_on_another_machine_that_went_silent_is_found_by_its_heartbeat(tmp_path: Path) -> None:
    """A trial whose worker ran on another host (so no pid to check here) and whose heartbeat
    stopped beyond the grace period: the next engine start fails it with the heartbeat reason and
    queues its params again."""
    import sqlalchemy as sa

    from engine.storage import HEARTBEAT_GRACE_S, Store, default_url, load_study, optuna_storage
    from engine.sweep.engine import Engine, create_or_resume
    from engine.sweep.recovery import HEARTBEAT_LOST, recover_dead_trials
    from engine.sweep.resolve import resolve_run

    resolved = resolve_run(None, str(TINY), {})
    url = default_url(tmp_path)
    Engine(resolved, url, tmp_path, "tiny", reporter=None).prepare()  # the data's settings, as `run` sets them
    created = create_or_resume(resolved.config, url, "tiny", tmp_path)
    storage = optuna_storage(url)
    study = load_study(url, "tiny", storage=storage)
    trial = study.ask()
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    trial.set_user_attr("worker", "gpu-node-7:4242")  # another machine: its pid means nothing here
    storage.record_heartbeat(trial._trial_id)
    store = Store(url)
    assert recover_dead_trials(url, "tiny", store, created.study_id, max_retries=1) == 0, "a fresh heartbeat"
    with sa.create_engine(url).begin() as conn:  # the machine went away: no beat since
        conn.execute(sa.text(f"UPDATE trial_heartbeats SET heartbeat = datetime('now', '-{HEARTBEAT_GRACE_S + 60} "
                             "seconds')"))
    assert recover_dead_trials(url, "tiny", store, created.study_id, max_retries=1) == 1
    trials = load(tmp_path).trials
    assert trials[0].state == States.FAIL and trials[0].user_attrs["fail_reason"] == HEARTBEAT_LOST
    assert trials[1].state == States.WAITING and trials[1].params == {"lr": lr}
    assert trials[1].user_attrs["retry_of"] == 0
    events = [e["message"] for e in store.events_of(created.study_id)]
    assert any(HEARTBEAT_LOST in m and "runs again with the same params" in m for m in events), events

    # A machine that goes silent while the sweep runs: its trial holds a budget slot, so the
    # sweep could never finish unless the running engine finds it (it used to wait forever).
    silent = study.ask()
    silent.suggest_float("lr", 1e-3, 1e-2, log=True)
    silent.set_user_attr("worker", "gpu-node-8:99")
    storage.record_heartbeat(silent._trial_id)
    with sa.create_engine(url).begin() as conn:  # stale some 12 s after the engine starts
        conn.execute(sa.text(f"UPDATE trial_heartbeats SET heartbeat = datetime('now', '-{HEARTBEAT_GRACE_S - 12} "
                             f"seconds') WHERE trial_id = {silent._trial_id}"))
    resumed = run_cli("run", "--config", str(TINY), "--workdir", str(tmp_path), "--no-tui", "--n-trials", "2",
                      timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    trials = load(tmp_path).trials
    assert trials[silent.number].state == States.FAIL
    assert trials[silent.number].user_attrs["fail_reason"] == HEARTBEAT_LOST
    assert sum(t.state == States.COMPLETE for t in trials) == 2
    events = [e["message"] for e in store.events_of(created.study_id)]
    resumed_at = next(i for i, m in enumerate(events) if "sweep 'tiny' resumed" in m)
    found_at = next(i for i, m in enumerate(events) if f"trial {silent.number}: {HEARTBEAT_LOST}" in m)
    assert found_at > resumed_at, "found while the sweep ran, not only at its start"
