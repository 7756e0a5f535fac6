"""What the TUI reads: the database, through a read-only connection, turned into frozen rows.

Optuna's tables are read with plain SQL (`engine.storage.optuna_sql`), our own through the
storage package's table objects, so the viewer never loads a Study object and never imports
torch. Trials are read incrementally: finished trials never change, so a poll fetches only new
trials and the ones that were still running, which keeps a tick cheap at 10,000 trials.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.config.space import train_params
from engine.storage import make_engine, optuna_sql
from engine.storage.states import SweepState, WorkerState, finished_count
from engine.storage.tables import decode_epoch, decode_sample, events, samples, sweeps, workers
from engine.storage.tables import epochs as epoch_rows
from tui_hpo import clock

FINAL = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class StudyRow:
    study_id: int
    name: str
    directions: tuple[str, ...]
    metrics: tuple[str, ...]
    n_trials: int | None
    state: str  # a SweepState: the sweep's, or EXTERNAL for a study tui-hpo did not create
    counts: dict[str, int]
    best: float | None
    created: float | None
    updated: float | None

    @property
    def done(self) -> int:
        return finished_count(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class TrialRow:
    trial_id: int
    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]  # by training key (engine.config.space.train_params)
    start: float | None
    complete: float | None
    worker: str | None = None
    device: str | None = None
    fail_reason: str | None = None
    epoch: int = 0  # epochs finished so far (across folds)
    retry_of: int | None = None  # the trial whose worker died, run again with these params

    def duration(self, now: float | None = None) -> float | None:
        if self.start is None:
            return None
        end = self.complete if self.complete is not None else (now or clock.now())
        return max(0.0, end - self.start)


@dataclass(frozen=True)
class Sample:
    host: str
    ts: float
    cpu_percent: float
    cpu_per_core: tuple[float, ...]
    ram_percent: float
    ram_used_mb: float
    disk_free_gb: float | None
    gpus: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    level: str
    kind: str
    message: str
    trial_number: int | None


class Reader:
    """Read-only queries of one database. Safe to call from a worker thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url, readonly=True)
        self._dists: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.engine.dispose()

    def has_schema(self) -> bool:
        """False until the engine has created the database and Optuna's whole schema in it."""
        try:
            with self.engine.connect() as conn:
                return optuna_sql.has_schema(conn)
        except sa.exc.DBAPIError:  # no database file yet (read-only connections do not create it)
            return False

    @staticmethod
    def _ours(conn: sa.Connection, table: sa.Table) -> bool:
        """Whether one of our tables exists: a study plain Optuna wrote has none of them."""
        return sa.inspect(conn).has_table(table.name)

    # ------------------------------------------------------------ studies

    def studies(self) -> list[StudyRow]:
        if not self.has_schema():
            return []
        with self.engine.connect() as conn:
            listed = optuna_sql.studies(conn)
            directions = optuna_sql.directions(conn)
            counts = optuna_sql.state_counts(conn)
            best = optuna_sql.best_values(conn, directions)
            ours = {row.study_id: row for row in conn.execute(sa.select(
                sweeps.c.study_id, sweeps.c.n_trials, sweeps.c.state, sweeps.c.created, sweeps.c.updated,
                sweeps.c.config))} if self._ours(conn, sweeps) else {}
        out = []
        for sid, name in listed:
            sweep = ours.get(sid)
            config = json.loads(sweep.config) if sweep else {}
            metric = (config.get("objective") or {}).get("metric", "value")
            out.append(StudyRow(
                study_id=sid, name=name, directions=tuple(directions.get(sid, [])),
                metrics=tuple(metric) if isinstance(metric, list) else (metric,),
                n_trials=sweep.n_trials if sweep else None, state=sweep.state if sweep else SweepState.EXTERNAL,
                counts=counts.get(sid, {}), best=best.get(sid),
                created=sweep.created if sweep else None, updated=sweep.updated if sweep else None))
        return out

    def study(self, name: str) -> StudyRow | None:
        return next((s for s in self.studies() if s.name == name), None)

    def sweep_config(self, study_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            if not self._ours(conn, sweeps):
                return {}
            text = conn.execute(sa.select(sweeps.c.config).where(sweeps.c.study_id == study_id)).scalar()
        return json.loads(text) if text else {}

    def split(self, study_id: int) -> dict[str, Any] | None:
        """The data split the engine stored at sweep start (engine.datasets.scan.split_sizes); None
        before it has, and for a study tui-hpo did not run."""
        with self.engine.connect() as conn:
            attrs = optuna_sql.study_attr(conn, study_id, "tui_hpo")
        return attrs.get("data") if isinstance(attrs, dict) else None

    # ------------------------------------------------------------ trials

    def trials(self, study_id: int, trial_ids: Iterable[int] | None = None, after_id: int = 0) -> list[TrialRow]:
        """Trials with id > after_id, plus the given ids (those that were not final last time)."""
        with self.engine.connect() as conn:
            base = optuna_sql.trials(conn, study_id, sorted(set(trial_ids or ())), after_id)
            if not base:
                return []
            ids = [row[0] for row in base]
            values = optuna_sql.trial_values(conn, ids)
            params = optuna_sql.trial_params(conn, ids, self._dists)
            attrs = optuna_sql.user_attrs(conn, ids)
            done_epochs: dict[int, int] = {}
            if self._ours(conn, epoch_rows):
                done_epochs = {int(tid): int(n) for tid, n in conn.execute(
                    sa.select(epoch_rows.c.trial_id, sa.func.count()).where(epoch_rows.c.trial_id.in_(ids))
                    .group_by(epoch_rows.c.trial_id))}
        rows = []
        for tid, number, state, start, complete in base:
            a = attrs.get(tid, {})
            rows.append(TrialRow(
                trial_id=tid, number=number, state=state, values=values.get(tid),
                params=train_params(params.get(tid, {})), start=start, complete=complete, worker=a.get("worker"),
                device=a.get("device"),
                fail_reason=a.get("fail_reason"), epoch=done_epochs.get(tid, 0), retry_of=a.get("retry_of")))
        return rows

    def trial_attrs(self, trial_id: int, keys: Iterable[str]) -> dict[str, Any]:
        """Those of a trial's user attributes a detail view shows beyond its row (F1 per class,
        early stopping): read for one trial, never on the dashboard's every-second poll."""
        with self.engine.connect() as conn:
            return optuna_sql.user_attrs(conn, [trial_id], keys).get(trial_id, {})

    def intermediate(self, trial_ids: Iterable[int]) -> dict[int, list[tuple[int, float]]]:
        with self.engine.connect() as conn:
            return optuna_sql.intermediate(conn, trial_ids)

    def epochs(self, trial_id: int) -> list[dict[str, Any]]:
        """A trial's steps, a program's own metrics beside the built-in ones. A database no
        engine of this version has opened yet has no column for those (this reader never migrates)."""
        columns = list(epoch_rows.c)
        with self.engine.connect() as conn:
            try:
                rows = conn.execute(sa.select(*columns).where(epoch_rows.c.trial_id == trial_id)
                                    .order_by(epoch_rows.c.fold, epoch_rows.c.epoch)).mappings().all()
            except sa.exc.DBAPIError:
                conn.rollback()
                columns = [c for c in columns if c.name != "metrics"]
                rows = conn.execute(sa.select(*columns, sa.null().label("metrics"))
                                    .where(epoch_rows.c.trial_id == trial_id)
                                    .order_by(epoch_rows.c.fold, epoch_rows.c.epoch)).mappings().all()
        return [decode_epoch(r) for r in rows]

    # ------------------------------------------------------------ system, events, workers

    def latest_samples(self, max_age_s: float = 30.0) -> list[Sample]:
        """The newest reading of each host that reported within max_age_s."""
        if not self.has_schema():
            return []
        with self.engine.connect() as conn:
            if not self._ours(conn, samples):
                return []
            newest = (sa.select(samples.c.host, sa.func.max(samples.c.id).label("id"))
                      .where(samples.c.ts > clock.now() - max_age_s).group_by(samples.c.host).subquery())
            rows = conn.execute(sa.select(samples).join(newest, samples.c.id == newest.c.id)
                                .order_by(samples.c.host)).mappings().all()
        return [_sample(r) for r in rows]

    def samples_between(self, start: float, end: float) -> list[Sample]:
        """Every host's readings in [start, end]; none for a database Optuna wrote without us."""
        if not self.has_schema():
            return []
        with self.engine.connect() as conn:
            if not self._ours(conn, samples):
                return []
            rows = conn.execute(sa.select(samples).where(samples.c.ts >= start, samples.c.ts <= end)
                                .order_by(samples.c.ts)).mappings().all()
        return [_sample(r) for r in rows]

    def events(self, study_id: int, after_id: int = 0, trial_number: int | None = None,
               limit: int = 200) -> list[Event]:
        query = sa.select(events.c.id, events.c.ts, events.c.level, events.c.kind, events.c.message,
                          events.c.trial_number).where(events.c.study_id == study_id, events.c.id > after_id)
        if trial_number is not None:
            query = query.where(events.c.trial_number == trial_number)
        with self.engine.connect() as conn:
            if not self._ours(conn, events):
                return []
            rows = conn.execute(query.order_by(events.c.id.desc()).limit(limit)).all()
        return [Event(*r) for r in reversed(rows)]

    def live_workers(self, study_id: int, max_age_s: float = 60.0) -> int:
        with self.engine.connect() as conn:
            if not self._ours(conn, workers):
                return 0
            return int(conn.execute(sa.select(sa.func.count()).select_from(workers).where(
                workers.c.study_id == study_id, workers.c.state != WorkerState.EXITED,
                workers.c.last_seen > clock.now() - max_age_s)).scalar() or 0)


def _sample(row: Any) -> Sample:
    s = decode_sample(row)
    return Sample(host=s["host"], ts=s["ts"], cpu_percent=s["cpu_percent"] or 0.0,
                  cpu_per_core=tuple(s["cpu_per_core"]), ram_percent=s["ram_percent"] or 0.0,
                  ram_used_mb=s["ram_used_mb"] or 0.0, disk_free_gb=s["disk_free_gb"], gpus=tuple(s["gpus"]))


@dataclass
class TrialFeed:
    """Keeps the trials of one study up to date with one cheap query per tick."""

    reader: Reader
    study_id: int
    rows: dict[int, TrialRow] = field(default_factory=dict)  # by number
    version: int = 0  # bumped by each poll that changed something
    _changed_at: dict[int, int] = field(default_factory=dict)  # number -> version of its last change
    _max_id: int = 0
    _open: set[int] = field(default_factory=set)  # trial ids not final yet

    def poll(self) -> None:
        """Fetch new trials and those that were not final last time."""
        fresh = self.reader.trials(self.study_id, self._open, self._max_id)
        bumped = False
        for row in fresh:
            self._max_id = max(self._max_id, row.trial_id)
            if row.state in FINAL:
                self._open.discard(row.trial_id)
            else:
                self._open.add(row.trial_id)
            if self.rows.get(row.number) != row:
                if not bumped:
                    self.version, bumped = self.version + 1, True
                self.rows[row.number] = row
                self._changed_at[row.number] = self.version

    def since(self, version: int) -> list[TrialRow]:
        """Rows changed after `version`: a viewer that missed a poll still catches up."""
        if version >= self.version:
            return []
        return [self.rows[n] for n, v in self._changed_at.items() if v > version]
