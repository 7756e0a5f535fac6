"""The database: Optuna's own schema, plus our tables beside it for what the TUI needs.

Optuna's RDB storage keeps studies, trials, params, values and intermediate values, so the
`optuna` CLI and optuna-dashboard open the same file. Our tables (prefix `hpo_`) add the sweep's
control state and budget, per-epoch metrics, system samples, an event log and the workers
(see `tables`). `Store` is the one writer of our tables.

Works on SQLite (the default, `DIR/hpo.db`) and any SQLAlchemy URL (PostgreSQL for several
machines). SQLite gets WAL, a busy timeout and NORMAL sync on every connection, so readers never
block the writer and a short write contention waits instead of failing with "database is locked".
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from engine.errors import UserError
from engine.storage import optuna_sql
from engine.storage.states import (
    OUTCOMES,
    RECENT_DURATIONS,
    WORKER_LIVE_S,
    EventKind,
    SweepState,
    WorkerState,
    finished_count,
)
from engine.storage.tables import (
    EPOCH_COLUMNS,
    MIGRATIONS,
    commands,
    decode_epoch,
    decode_sample,
    epochs,
    events,
    repeats,
    samples,
    schema_table,
    shapes,
    sweeps,
    workers,
)
from engine.storage.urls import mask_url, readonly_url, refuse_bare_at

BUSY_TIMEOUT_S = 60.0
SCHEMA_RETRIES = 5
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 30


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL + busy timeout on every SQLite connection, Optuna's included (it sets none)."""
    module = type(dbapi_conn).__module__
    if "sqlite" not in module:
        return
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        except Exception:  # a read-only connection cannot switch modes; the writer already did
            pass
    finally:
        cursor.close()


def cannot_open(url: str, exc: BaseException) -> UserError:
    """A URL that does not parse, a driver that is not installed, a folder that does not exist, a
    file that is not a database (or a damaged one): bad input, said in one line with the URL."""
    reason = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    why = (str(reason).splitlines() or [type(reason).__name__])[0]
    return UserError(f"cannot open the storage {mask_url(url)}: {why}", key="--storage")


def make_engine(url: str, readonly: bool = False) -> Engine:
    if url.startswith("sqlite"):
        return sa.create_engine(readonly_url(url) if readonly else url,
                                connect_args={"timeout": BUSY_TIMEOUT_S})
    refuse_bare_at(url)
    return sa.create_engine(url, pool_pre_ping=True)



STORAGE_CACHE = 16  # storages kept per process (a test session opens hundreds of databases)
_storages: dict[tuple[Any, ...], Any] = {}


def optuna_storage(url: str, heartbeat: bool = True, readonly: bool = False) -> Any:
    """Optuna's RDBStorage on `url`, with heartbeats so dead workers' trials can be found (see
    `Store.stale_trials`). `readonly`: a viewer's, which never writes (a read-only SQLite
    connection, no table creation, no heartbeats).

    One per process and database: Optuna checks the schema's version each time it makes one,
    which costs from 35 ms to half a second, and the engine asks for one every few seconds. A
    SQLite file is known by its inode, so a database removed and made again gets a new storage
    rather than connections to the deleted file."""
    refuse_bare_at(url)
    key = (url, heartbeat, readonly, _file_identity(url))
    if key[-1] is None and url.startswith("sqlite"):  # in memory, or not created yet: never shared
        return _new_storage(url, heartbeat, readonly)
    storage = _storages.pop(key, None) or _new_storage(url, heartbeat, readonly)
    _storages[key] = storage  # the newest last: the oldest goes first
    while len(_storages) > STORAGE_CACHE:
        del _storages[next(iter(_storages))]
    return storage


@atexit.register
def _close_storages() -> None:
    """Close the kept storages' connections as the process ends: the last connection to a SQLite
    database to close folds its write-ahead log into the file, which a reader of read-only media
    (SQLite's `immutable`, which ignores the log) needs."""
    for storage in _storages.values():
        with contextlib.suppress(Exception):
            storage.engine.dispose()
    _storages.clear()


def _file_identity(url: str) -> tuple[int, int] | str | None:
    """A SQLite file's (device, inode), None where there is no file; a server's URL is its identity."""
    if not url.startswith("sqlite"):
        return "server"
    database = sa.engine.make_url(url).database
    try:
        stat = os.stat(database) if database and database != ":memory:" else None
    except OSError:
        return None
    return None if stat is None else (stat.st_dev, stat.st_ino)


def _new_storage(url: str, heartbeat: bool, readonly: bool) -> Any:
    import optuna

    if readonly:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return optuna.storages.RDBStorage(readonly_url(url), skip_table_creation=True)
            except (sa.exc.ArgumentError, sa.exc.DatabaseError, ImportError) as exc:
                raise cannot_open(url, exc) from None
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": BUSY_TIMEOUT_S}}} \
        if url.startswith("sqlite") else {"engine_kwargs": {"pool_pre_ping": True}}
    if heartbeat:
        kwargs.update(heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S)
    kind = _sqlite_storage() if url.startswith("sqlite") else optuna.storages.RDBStorage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return _creating_schema(lambda: kind(url, **kwargs))
        except (sa.exc.ArgumentError, sa.exc.DatabaseError, ImportError) as exc:
            raise cannot_open(url, exc) from None


def _sqlite_storage() -> type:
    """RDBStorage whose WAITING -> RUNNING step is one conditional UPDATE on SQLite.

    Optuna reads the trial's state, then writes RUNNING: on PostgreSQL the read locks the row, but
    SQLite has no row locks and Python's sqlite3 starts the transaction only at the write, so two
    workers asking at once could both take the same waiting trial (an enqueued one, or a rerun)
    and train it twice. `UPDATE ... WHERE state = 'WAITING'` lets exactly one of them have it."""
    import optuna
    from optuna.storages._rdb import models

    class SqliteStorage(optuna.storages.RDBStorage):
        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            if state != optuna.trial.TrialState.RUNNING or values is not None:
                return super().set_trial_state_values(trial_id, state, values)
            table = models.TrialModel.__table__
            with self.engine.begin() as conn:
                taken = conn.execute(table.update().where(table.c.trial_id == trial_id,
                                                          table.c.state == optuna.trial.TrialState.WAITING)
                                     .values(state=optuna.trial.TrialState.RUNNING,
                                             datetime_start=datetime.now())).rowcount
            if taken != 1:
                super().check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)  # finished: raises
            return taken == 1

    return SqliteStorage


def _creating_schema(create: Callable[[], Any]) -> Any:
    """Run `create`, which may create tables. Two processes opening a new database at once (an
    engine and a joining worker, or a viewer) both see no table and both create it; the loser
    gets "already exists", and simply opens what the winner made."""
    for attempt in range(1, SCHEMA_RETRIES):
        try:
            return create()
        except sa.exc.OperationalError as exc:
            if "already exists" not in str(exc):
                raise
            time.sleep(0.1 * attempt)
    return create()


@dataclass(frozen=True)
class SweepRow:
    """A sweep as stored. `n_trials` lives in its own column only (the app's +/- and every
    worker's budget claim use it); `config` shows it too, read from that column."""

    study_id: int
    study_name: str
    config: dict[str, Any]
    n_trials: int
    claimed: int
    state: str
    deadline: float | None
    created: float
    updated: float

    def sweep_config(self) -> Any:
        """The resolved config the sweep runs with, budget included."""
        from engine.config import SweepConfig

        return SweepConfig.model_validate(self.config)


def _stored(config: dict[str, Any]) -> str:
    """The config as JSON, without `budget.n_trials`: that lives in the n_trials column alone."""
    budget = {k: v for k, v in (config.get("budget") or {}).items() if k != "n_trials"}
    return json.dumps({**config, "budget": budget})


class Store:
    """Our tables. One instance per process; every write is a short transaction of its own."""

    def __init__(self, url: str, readonly: bool = False) -> None:
        self.url = url
        try:
            self.engine = make_engine(url, readonly=readonly)
            if not readonly:
                self.migrate()
        except (sa.exc.ArgumentError, sa.exc.DatabaseError, ImportError) as exc:
            raise cannot_open(url, exc) from None

    @contextmanager
    def tx(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    def migrate(self) -> None:
        _creating_schema(self._migrate)

    def _migrate(self) -> None:
        with self.tx() as conn:
            schema_table.create(conn, checkfirst=True)
            version = conn.execute(sa.select(sa.func.max(schema_table.c.version))).scalar() or 0
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(conn)
                conn.execute(schema_table.insert().values(version=number))

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ sweeps and budget

    def create_sweep(self, study_id: int, study_name: str, config: dict[str, Any], n_trials: int) -> None:
        now = time.time()
        with self.tx() as conn:
            conn.execute(sweeps.insert().values(
                study_id=study_id, study_name=study_name, config=_stored(config), n_trials=n_trials,
                claimed=0, state=SweepState.RUNNING, deadline=None, created=now, updated=now))

    def sweep(self, study_name: str) -> SweepRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sweeps).where(sweeps.c.study_name == study_name)).mappings().first()
        if row is None:
            return None
        config = json.loads(row["config"])
        config["budget"] = {**(config.get("budget") or {}), "n_trials": row["n_trials"]}
        return SweepRow(**{**row, "config": config})

    def sweep_by_id(self, study_id: int) -> SweepRow | None:
        with self.engine.connect() as conn:
            name = conn.execute(sa.select(sweeps.c.study_name).where(sweeps.c.study_id == study_id)).scalar()
        return None if name is None else self.sweep(name)

    def update_sweep(self, study_id: int, **values: Any) -> None:
        if "config" in values:
            values["config"] = _stored(values["config"])
        with self.tx() as conn:
            conn.execute(sweeps.update().where(sweeps.c.study_id == study_id).values(updated=time.time(), **values))

    def claim(self, study_id: int) -> bool:
        """Take one slot of the trial budget, atomically on any backend."""
        with self.tx() as conn:
            result = conn.execute(
                sweeps.update()
                .where(sweeps.c.study_id == study_id, sweeps.c.claimed < sweeps.c.n_trials,
                       sweeps.c.state == SweepState.RUNNING)
                .values(claimed=sweeps.c.claimed + 1))
        return result.rowcount == 1

    def release(self, study_id: int) -> None:
        """Give a slot back: its trial failed and does not count towards n_trials."""
        with self.tx() as conn:
            conn.execute(sweeps.update().where(sweeps.c.study_id == study_id, sweeps.c.claimed > 0)
                         .values(claimed=sweeps.c.claimed - 1))

    def sweep_state(self, study_id: int) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sweeps.c.state).where(sweeps.c.study_id == study_id)).scalar()

    def n_trials(self, study_id: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sweeps.c.n_trials).where(sweeps.c.study_id == study_id)).scalar())

    def stop_sweep(self, study_id: int, state: SweepState = SweepState.STOPPING) -> None:
        self.update_sweep(study_id, state=state)

    # ------------------------------------------------------------ Optuna's tables, read by SQL (optuna_sql)

    def state_counts(self, study_id: int) -> dict[str, int]:
        """Trials by state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), in one query."""
        with self.engine.connect() as conn:
            return optuna_sql.state_counts(conn, study_id).get(study_id, {})

    def finished_count(self, study_id: int) -> int:
        return finished_count(self.state_counts(study_id))

    def best_values(self, study_id: int) -> list[float] | None:
        """The best objective value of a single-objective study; None when there is none yet or
        the study has several objectives (then there is a Pareto front, not a best)."""
        with self.engine.connect() as conn:
            best = optuna_sql.best_values(conn, optuna_sql.directions(conn, study_id))
        return [best[study_id]] if study_id in best else None

    def stale_trials(self, study_id: int, grace_s: float) -> set[int]:
        with self.engine.connect() as conn:
            return optuna_sql.stale_trials(conn, study_id, grace_s)

    def values_of(self, study_id: int, numbers: Iterable[int]) -> dict[int, float]:
        with self.engine.connect() as conn:
            return optuna_sql.values_of(conn, study_id, numbers)

    def durations(self, study_id: int, last: int = RECENT_DURATIONS) -> list[float]:
        """Seconds taken by the most recent finished trials (for the ETA)."""
        with self.engine.connect() as conn:
            return optuna_sql.durations(conn, study_id, last)

    def recent_failures(self, study_id: int, limit: int) -> int:
        """How many of the last `limit` trial outcomes in a row were failures (interruptions aside)."""
        with self.engine.connect() as conn:
            kinds = conn.execute(sa.select(events.c.kind).where(events.c.study_id == study_id,
                                                                events.c.kind.in_(OUTCOMES))
                                 .order_by(events.c.id.desc()).limit(limit)).scalars().all()
        run = 0
        for kind in kinds:
            if kind != EventKind.TRIAL_FAILED:
                break
            run += 1
        return run

    # ------------------------------------------------------------ metrics, events, samples

    def add_epoch(self, study_id: int, trial_id: int, fold: int, metrics: dict[str, float]) -> None:
        with self.tx() as conn:
            conn.execute(epochs.insert().values(study_id=study_id, trial_id=trial_id, fold=fold,
                                                ts=time.time(), **metrics))

    def set_epoch(self, study_id: int, trial_id: int, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        """A program's step, replaced whole as more of its metrics arrive: the built-in names in
        their columns, any others as JSON."""
        known = {k: v for k, v in metrics.items() if k in EPOCH_COLUMNS}
        other = {k: v for k, v in metrics.items() if k not in EPOCH_COLUMNS}
        with self.tx() as conn:
            conn.execute(epochs.delete().where(epochs.c.trial_id == trial_id, epochs.c.fold == fold,
                                               epochs.c.epoch == epoch))
            conn.execute(epochs.insert().values(study_id=study_id, trial_id=trial_id, fold=fold, epoch=epoch,
                                                ts=time.time(), metrics=json.dumps(other) if other else None,
                                                **known))

    def set_param(self, trial_id: int, name: str, value: float) -> None:
        """A running trial's parameter `name` (Optuna's name) set to `value` (Optuna's internal form)."""
        with self.tx() as conn:
            optuna_sql.set_param_value(conn, trial_id, name, value)

    def clear_epochs(self, trial_id: int, fold: int) -> None:
        """Forget a fold's epochs: it is trained again from its start (after running out of memory)."""
        with self.tx() as conn:
            conn.execute(epochs.delete().where(epochs.c.trial_id == trial_id, epochs.c.fold == fold))

    def epochs_of(self, trial_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(epochs).where(epochs.c.trial_id == trial_id)
                                .order_by(epochs.c.fold, epochs.c.epoch)).mappings().all()
        return [decode_epoch(r) for r in rows]

    # ------------------------------------------------------------ measurements per shape

    def shape(self, key: str) -> dict[str, float | None]:
        """What was measured for `key` (see `engine.sweep.compile_policy.shape_key`); empty if nothing."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(shapes).where(shapes.c.key == key)).mappings().first()
        return {k: row[k] for k in ("eager_step_s", "compiled_step_s", "compile_s", "fitted_batch")} if row else {}

    def record_shape(self, key: str, **measured: float) -> None:
        """Set the measured values of `key` (others are kept): the newest measurement wins."""
        values = {**measured, "updated": time.time()}
        for _attempt in range(2):
            with self.tx() as conn:
                done = conn.execute(shapes.update().where(shapes.c.key == key).values(**values))
                if done.rowcount:
                    return
                try:
                    with conn.begin_nested():
                        conn.execute(shapes.insert().values(key=key, **values))
                    return
                except sa.exc.IntegrityError:  # another worker inserted it first: update theirs
                    continue

    def add_repeat(self, study_id: int, trial_number: int, seed: int, values: list[float], seconds: float,
                   host: str) -> None:
        """Record one rerun. A second `repeat` running at the same time may have recorded the same
        (trial, seed) first: the run is the same, so the first row stands."""
        try:
            with self.tx() as conn:
                conn.execute(repeats.insert().values(study_id=study_id, trial_number=trial_number, seed=seed,
                                                     values_json=json.dumps(values), seconds=seconds, host=host,
                                                     created=time.time()))
        except sa.exc.IntegrityError:
            pass

    def repeats_of(self, study_id: int) -> list[dict[str, Any]]:
        """Every recorded rerun of the study's trials, as dicts with `values` decoded."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("hpo_repeat"):
                return []
            rows = conn.execute(sa.select(repeats).where(repeats.c.study_id == study_id)
                                .order_by(repeats.c.trial_number, repeats.c.seed)).mappings().all()
        return [{**dict(r), "values": json.loads(r["values_json"])} for r in rows]

    def add_event(self, study_id: int, kind: str, message: str, level: str = "info",
                  trial_number: int | None = None) -> None:
        with self.tx() as conn:
            conn.execute(events.insert().values(study_id=study_id, trial_number=trial_number, ts=time.time(),
                                                level=level, kind=kind, message=message))

    def events_of(self, study_id: int, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events).where(events.c.study_id == study_id, events.c.id > after_id)
                                .order_by(events.c.id).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def add_sample(self, reading: dict[str, Any]) -> None:
        """One system reading (engine.system.monitor.sample); lists are stored as JSON."""
        row = {k: json.dumps(v) if isinstance(v, list) else v for k, v in reading.items()}
        with self.tx() as conn:
            conn.execute(samples.insert().values(**row))

    def samples_between(self, start: float, end: float, host: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(samples).where(samples.c.ts >= start, samples.c.ts <= end)
        if host is not None:
            query = query.where(samples.c.host == host)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(samples.c.ts)).mappings().all()
        return [decode_sample(r) for r in rows]

    def prune_samples(self, older_than: float) -> int:
        """Delete system samples taken before `older_than`; returns how many went."""
        with self.tx() as conn:
            return conn.execute(samples.delete().where(samples.c.ts < older_than)).rowcount or 0

    def count_samples(self, before: float) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(samples)
                                    .where(samples.c.ts < before)).scalar() or 0)

    # ------------------------------------------------------------ workers and commands

    def register_worker(self, study_id: int, host: str, pid: int, device: str) -> int:
        now = time.time()
        with self.tx() as conn:
            result = conn.execute(workers.insert().values(study_id=study_id, host=host, pid=pid, device=device,
                                                          state=WorkerState.IDLE, started=now, last_seen=now))
        return int(result.inserted_primary_key[0])

    def update_worker(self, worker_id: int, **values: Any) -> None:
        with self.tx() as conn:
            conn.execute(workers.update().where(workers.c.id == worker_id).values(last_seen=time.time(), **values))

    def alive(self, study_id: int, now: float | None = None) -> bool:
        """Whether any worker of the study has been seen in the last WORKER_LIVE_S seconds."""
        since = (time.time() if now is None else now) - WORKER_LIVE_S
        return any(w["state"] != WorkerState.EXITED and (w["last_seen"] or 0) > since
                   for w in self.workers_of(study_id))

    def workers_of(self, study_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(workers).where(workers.c.study_id == study_id)
                                .order_by(workers.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def add_command(self, study_id: int, command: str, trial_number: int | None = None) -> None:
        with self.tx() as conn:
            conn.execute(commands.insert().values(study_id=study_id, trial_number=trial_number,
                                                  command=command, created=time.time()))

    def take_command(self, study_id: int, command: str, trial_number: int) -> bool:
        """Mark an open command for this trial done; True if there was one.

        Checked once per epoch: a read first, so the common case (no command) writes nothing."""
        open_command = sa.select(commands.c.id).where(
            commands.c.study_id == study_id, commands.c.command == command,
            commands.c.trial_number == trial_number, commands.c.done.is_(None)).limit(1)
        with self.engine.connect() as conn:
            if conn.execute(open_command).first() is None:
                return False
        with self.tx() as conn:
            result = conn.execute(commands.update().where(
                commands.c.study_id == study_id, commands.c.command == command,
                commands.c.trial_number == trial_number, commands.c.done.is_(None)).values(done=time.time()))
        return result.rowcount > 0
