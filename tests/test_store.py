"""Our tables beside Optuna's: migrations, the budget, and readers that never block the writer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from engine.storage import Store, default_url, mask_url, optuna_storage
from engine.storage.tables import MIGRATIONS


def test_migrations_are_idempotent_and_share_the_optuna_database(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    study = optuna.create_study(study_name="s", storage=optuna_storage(url))
    Store(url)
    Store(url)  # a second process opening the same database migrates nothing twice
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM hpo_schema")).scalar() == len(MIGRATIONS)
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    assert study.study_name == "s"


def in_threads(*targets: Callable[[], None]) -> None:
    """Run the targets in threads and re-raise the first error any of them hit (a thread's
    exception would otherwise only be printed, and the test pass)."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_budget_claims_are_atomic(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    store.create_sweep(1, "s", {}, n_trials=5)
    results: list[bool] = []

    def claim_many() -> None:
        for _ in range(5):
            results.append(Store(store.url).claim(1))

    in_threads(*[claim_many] * 4)
    assert results.count(True) == 5
    store.release(1)
    assert store.claim(1) and not store.claim(1)
    store.stop_sweep(1, "paused")
    store.release(1)
    assert not store.claim(1), "a paused sweep hands out no slots"


def test_readonly_reader_while_writer_writes(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    writer = Store(url)
    writer.create_sweep(1, "s", {}, n_trials=5)
    reader = Store(url, readonly=True)
    stop = time.time() + 1.5

    writes = 0

    def write() -> None:
        nonlocal writes
        while time.time() < stop:
            writer.add_event(1, "x", "y")
            writes += 1

    reads = 0

    def read() -> None:
        nonlocal reads
        while time.time() < stop:
            reader.events_of(1)
            reads += 1

    in_threads(write, read)
    assert reads > 10 and writes > 10
    try:
        reader.add_event(1, "x", "y")
        raise AssertionError("a read-only store must not write")
    except sa.exc.OperationalError:
        pass


def test_passwords_are_masked() -> None:
    assert mask_url("postgresql+psycopg://hpo:s3cret@db:5432/x") == "postgresql+psycopg://hpo:***@db:5432/x"
    assert mask_url("sqlite:////tmp/hpo.db") == "sqlite:////tmp/hpo.db"


def test_n_trials_lives_in_one_place(tmp_path: Path) -> None:
    """The budget is the hpo_sweep column: the stored config does not carry a second copy that
    could disagree, and every reader (a worker's config, --resume) sees the column."""
    from engine.config import resolve
    from tui_hpo.control import Control

    url = default_url(tmp_path)
    config = resolve({}, preset="quick", environ={})
    store = Store(url)
    store.create_sweep(1, "s", config.to_dict(), n_trials=config.budget.n_trials)
    Control(url).change_budget(1, +7, floor=0)  # the dashboard's "+"
    with sa.create_engine(url).connect() as conn:
        raw = json.loads(conn.execute(sa.text("SELECT config FROM hpo_sweep")).scalar())
    assert "n_trials" not in raw["budget"] and raw["budget"]["max_retries"] == config.budget.max_retries
    row = store.sweep("s")
    assert row.n_trials == row.config["budget"]["n_trials"] == row.sweep_config().budget.n_trials == 27
    store.update_sweep(1, config=row.config)  # a resume writes the config back: still one copy
    assert store.sweep("s").n_trials == 27


def test_the_installed_optuna_writes_the_schema_our_sql_reads(tmp_path: Path) -> None:
    """engine/storage/optuna_sql.py reads Optuna's tables with plain SQL. If a new Optuna changes
    its schema (a new alembic revision), this fails first: check those queries, then the pin."""
    from engine.storage import optuna_sql

    url = default_url(tmp_path)
    optuna.create_study(study_name="s", storage=optuna_storage(url))
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == optuna_sql.SCHEMA_VERSION
        assert optuna_sql.has_schema(conn)


def test_a_waiting_trial_goes_to_one_worker_only(tmp_path: Path) -> None:
    """Two workers asking at once for an enqueued trial: SQLite has no row locks, so the step from
    WAITING to RUNNING must be one conditional write, or both would train it."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    first, second = optuna_storage(url, heartbeat=False), optuna_storage(url, heartbeat=False)
    study = optuna.create_study(study_name="s", storage=first)
    study.enqueue_trial({"x": 1.0})
    [waiting] = first.get_all_trials(study._study_id, states=(optuna.trial.TrialState.WAITING,))
    assert first.set_trial_state_values(waiting._trial_id, optuna.trial.TrialState.RUNNING)
    assert not second.set_trial_state_values(waiting._trial_id, optuna.trial.TrialState.RUNNING)
    assert first.get_trial(waiting._trial_id).datetime_start is not None
    first.set_trial_state_values(waiting._trial_id, optuna.trial.TrialState.COMPLETE, [1.0])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        second.set_trial_state_values(waiting._trial_id, optuna.trial.TrialState.RUNNING)
