"""Our tables beside Optuna's: migrations, the budget, and readers that never block the writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
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


def test_budget_claims_are_atomic(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    store.create_sweep(1, "s", {}, n_trials=5)
    results: list[bool] = []

    def claim_many() -> None:
        for _ in range(5):
            results.append(Store(store.url).claim(1))

    threads = [threading.Thread(target=claim_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
    errors: list[Exception] = []

    def write() -> None:
        while time.time() < stop:
            writer.add_event(1, "x", "y")

    thread = threading.Thread(target=write)
    thread.start()
    reads = 0
    while time.time() < stop:
        try:
            reader.events_of(1)
            reads += 1
        except Exception as exc:  # pragma: no cover - the point is that this never happens
            errors.append(exc)
    thread.join()
    assert not errors and reads > 10
    try:
        reader.add_event(1, "x", "y")
        raise AssertionError("a read-only store must not write")
    except sa.exc.OperationalError:
        pass


def test_passwords_are_masked() -> None:
    assert mask_url("postgresql+psycopg://hpo:s3cret@db:5432/x") == "postgresql+psycopg://hpo:***@db:5432/x"
    assert mask_url("sqlite:////tmp/hpo.db") == "sqlite:////tmp/hpo.db"
