"""What the TUI reads: the database, through a read-only connection, turned into frozen rows.

Optuna's tables are read with plain SQL (`engine.storage.optuna_sql`), our own through the
storage package's table objects, so the viewer never loads a Study object and never imports
torch. Trials are read incrementally: finished trials never change, so a poll fetches only new
trials and the ones that were still running, and a study's trials are held as columns (`Trials`,
numpy arrays) rather than one object each, which keeps a tick cheap at 100,000 trials.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from engine.config.space import train_key
from engine.storage import STUDY_ATTR, make_engine, optuna_sql
from engine.storage.optuna_sql import decode_param
from engine.storage.states import RECENT_DURATIONS, WORKER_LIVE_S, SweepState, WorkerState, finished_count
from engine.storage.tables import decode_epoch, decode_sample, events, samples, sweeps, workers
from engine.storage.tables import epochs as epoch_rows
from tui_hpo import clock
from tui_hpo.query import Codes, Numbers

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


STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")  # a trial's state code indexes this
STATE_CODE = {state: code for code, state in enumerate(STATES)}


class Labels:
    """The distinct values of a column of repeated values (a categorical parameter, the worker) and
    their codes. Append-only: a snapshot that holds codes stays valid while a later poll adds
    values. Keyed by type as well, so `True`, `1` and `1.0` stay three choices."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._codes: dict[tuple[str, Any], int] = {}

    def code(self, value: Any) -> int:
        key = (type(value).__name__, value)
        found = self._codes.get(key)
        if found is None:
            found = self._codes[key] = len(self.values)
            self.values.append(value)
        return found


@dataclass(frozen=True)
class TrialBatch:
    """Rows of Optuna's tables for some trials, as stored: `Trials.merged` decodes them."""

    base: list[tuple]  # optuna_sql.trials
    values: list[tuple] = field(default_factory=list)
    params: list[tuple] = field(default_factory=list)
    attrs: list[tuple] = field(default_factory=list)
    epochs: list[tuple] = field(default_factory=list)  # (trial_id, epochs finished)
    fixed: list[tuple] = field(default_factory=list)  # optuna_sql.fixed_params of the waiting trials


class Trials:
    """A study's trials as columns: one numpy array per field, a trial's fields at one position
    (the order they were read: by number). 100,000 trials are a few megabytes, sorted and filtered
    in milliseconds (`tui_hpo.query`), where one object per trial took seconds and hundreds of MB.

    A snapshot never changes once published: `merged` returns a new one, so the UI thread can draw
    one while a worker thread reads the next. The lookup by number and the label lists are
    append-only and shared between snapshots (a position past `n` is not this snapshot's)."""

    def __init__(self) -> None:
        self.trial_id = np.zeros(0, dtype=np.int64)
        self.number = np.zeros(0, dtype=np.int64)
        self.state = np.zeros(0, dtype=np.int8)
        self.start = np.zeros(0)  # seconds since the epoch, NaN: not started
        self.complete = np.zeros(0)  # NaN: not finished
        self.epoch = np.zeros(0, dtype=np.int32)  # epochs finished so far (across folds)
        self.values = np.zeros((0, 1))  # (trial, objective), NaN: none
        self.params: dict[str, Numbers | Codes] = {}  # by training key, in the order first seen
        self._labels: dict[str, Labels] = {"worker": Labels(), "device": Labels()}
        self.worker = Codes(np.zeros(0, dtype=np.int32), self._labels["worker"].values)
        self.device = Codes(np.zeros(0, dtype=np.int32), self._labels["device"].values)
        self.notes: dict[int, dict[str, Any]] = {}  # position -> fail_reason / retry_of, for the few that have one
        self.ints: set[str] = set()  # the params Optuna samples as integers (stored as floats, like all)
        self.index: dict[int, int] = {}  # number -> position
        self._memo: dict[Any, Any] = {}  # what `cached` computed from this snapshot

    @property
    def n(self) -> int:
        return len(self.number)

    def position(self, number: int) -> int | None:
        at = self.index.get(number)
        return at if at is not None and at < self.n else None

    def row(self, number: int) -> TrialRow | None:
        at = self.position(number)
        return None if at is None else self.row_at(at)

    def row_at(self, at: int) -> TrialRow:
        """One trial as a frozen row, for what shows a single trial (the detail, the actions)."""
        values = tuple(float(v) for v in self.values[at] if not np.isnan(v))
        params = {}
        for key, column in self.params.items():
            value = _cell(column, at)
            if value is not None:
                params[key] = int(value) if key in self.ints else value
        notes = self.notes.get(at, {})
        return TrialRow(
            trial_id=int(self.trial_id[at]), number=int(self.number[at]), state=STATES[self.state[at]],
            values=values or None, params=params, start=_float(self.start[at]), complete=_float(self.complete[at]),
            worker=_cell(self.worker, at), device=_cell(self.device, at), fail_reason=notes.get("fail_reason"),
            epoch=int(self.epoch[at]), retry_of=notes.get("retry_of"))

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per snapshot: a tick that read nothing new redraws from the same one."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def counts(self) -> dict[str, int]:
        """Trials by state, as `optuna_sql.state_counts` gives them."""
        return self.cached("counts", lambda: {STATES[code]: int(n) for code, n in enumerate(
            np.bincount(self.state, minlength=len(STATES))) if n})

    def with_state(self, *states: str) -> np.ndarray:
        return np.array([s in states for s in STATES])[self.state]

    def durations(self, now: float) -> np.ndarray:
        """Seconds each trial ran (until now for a running one); NaN for one not started."""
        return np.where(np.isnan(self.complete), now, self.complete) - self.start

    def best(self, directions: tuple[str, ...]) -> int | None:
        """The position of the best completed trial of a single-objective study."""
        if len(directions) != 1 or not self.n:
            return None
        return self.cached(("best", directions[0]), lambda: self._best(directions[0] == "maximize"))

    def _best(self, maximize: bool) -> int | None:
        first = np.where(self.with_state("COMPLETE"), self.values[:, 0], np.nan)
        if np.isnan(first).all():
            return None
        return int(np.nanargmax(first) if maximize else np.nanargmin(first))

    # ------------------------------------------------------------ building

    def merged(self, batch: TrialBatch) -> Trials:
        """A new snapshot with the batch's trials added or replaced; this one unchanged. New trials
        come after every known one (ids only grow), so `trial_id` stays sorted and a row of any
        table finds its trial's position by binary search, for a whole page at once."""
        if not batch.base:
            return self
        last = int(self.trial_id[-1]) if self.n else -1
        fresh = sorted(row for row in batch.base if row[0] > last)
        out = self._grown(len(fresh))
        if fresh:
            numbers = [row[1] for row in fresh]
            self.index.update(zip(numbers, range(self.n, self.n + len(fresh)), strict=True))
            out.trial_id[self.n:] = [row[0] for row in fresh]
        ids, numbers, states, starts, completes = zip(*batch.base, strict=True)
        at = out.at(ids)
        out.number[at] = numbers
        codes = STATE_CODE
        out.state[at] = [codes[s] if s in codes else codes.get(optuna_sql.state_name(s), codes["WAITING"])
                         for s in states]
        out.start[at] = optuna_sql.timestamps(starts)
        out.complete[at] = optuna_sql.timestamps(completes)
        out.values[at] = np.nan
        out.epoch[at] = 0
        for i in at.tolist():
            out.notes.pop(i, None)
        out._values(batch.values)
        out._params(batch.params)
        out._fixed(batch.fixed)
        out._attrs(batch.attrs)
        if batch.epochs:
            tids, done = zip(*batch.epochs, strict=True)
            out.epoch[out.at(tids)] = done
        return out

    def at(self, trial_ids: Any) -> np.ndarray:
        """The positions of the given (known) trial ids."""
        return np.searchsorted(self.trial_id, np.asarray(trial_ids, dtype=np.int64))

    def _grown(self, extra: int) -> Trials:
        """A copy with `extra` empty trials at the end (a copy even with none: snapshots never change)."""
        out = Trials.__new__(Trials)

        def grow(array: np.ndarray, fill: Any) -> np.ndarray:
            return np.concatenate([array, np.full((extra, *array.shape[1:]), fill, dtype=array.dtype)])

        out.trial_id, out.number = grow(self.trial_id, -1), grow(self.number, -1)
        out.state, out.epoch = grow(self.state, STATE_CODE["WAITING"]), grow(self.epoch, 0)
        out.start, out.complete, out.values = grow(self.start, np.nan), grow(self.complete, np.nan), \
            grow(self.values, np.nan)
        out.params = {key: Numbers(grow(c.values, np.nan)) if isinstance(c, Numbers) else
                      Codes(grow(c.codes, -1), c.labels) for key, c in self.params.items()}
        out.worker = Codes(grow(self.worker.codes, -1), self.worker.labels)
        out.device = Codes(grow(self.device.codes, -1), self.device.labels)
        out.notes = dict(self.notes)
        out.index, out._labels, out.ints = self.index, self._labels, self.ints
        out._memo = {}
        return out

    def _values(self, rows: list[tuple]) -> None:
        if not rows:
            return
        tids, objectives, values = zip(*rows, strict=True)
        objective = np.array(objectives, dtype=np.int64)
        if objective.max() >= self.values.shape[1]:
            wider = np.full((self.n, int(objective.max()) + 1), np.nan)
            wider[:, : self.values.shape[1]] = self.values
            self.values = wider
        self.values[self.at(tids), objective] = np.array(values, dtype=float)  # None (not stored) -> NaN

    def _params(self, rows: list[tuple]) -> None:
        """Decoded by (name, distribution) group, a numpy step each: a study whose space never
        changed has one group per parameter."""
        if not rows:
            return
        tids, names, stored, dists = zip(*rows, strict=True)
        groups: dict[tuple[str, str], int] = {}
        group = np.array([groups.setdefault(key, len(groups)) for key in zip(names, dists, strict=True)])
        at_all, stored_all = self.at(tids), np.array(stored, dtype=float)
        for (name, dist), g in groups.items():
            key, spec, mine = train_key(name), json.loads(dist), group == g
            at, values = at_all[mine], stored_all[mine]
            column = self.params.get(key)
            if spec.get("name") == "CategoricalDistribution":
                choices = spec.get("attributes", {})["choices"]
                if column is None:
                    self._labels[key] = Labels()
                    column = self.params[key] = Codes(np.full(self.n, -1, dtype=np.int32), self._labels[key].values)
                if isinstance(column, Codes):
                    column.codes[at] = np.array([self._labels[key].code(c) for c in choices])[values.astype(int)]
                else:  # the same name was a number in other trials: keep the choices that are numbers
                    column.values[at] = [float(c) if isinstance(c, int | float) else np.nan
                                         for c in (choices[int(v)] for v in values)]
                continue
            if column is None:
                column = self.params[key] = Numbers(np.full(self.n, np.nan))
                if spec.get("name") == "IntDistribution":
                    self.ints.add(key)
            if isinstance(column, Numbers):
                column.values[at] = values
            else:  # the same name was a choice in other trials: these numbers become choices too
                column.codes[at] = [self._labels[key].code(decode_param(v, spec)) for v in values.tolist()]

    def _fixed(self, rows: list[tuple]) -> None:
        """An enqueued trial's params, shown in its row while it waits (a worker that takes it
        stores them as any trial's, and the next poll reads those). Only into columns that stored
        params made: a bare value cannot tell a choice of 32 from a number, and a column guessed
        wrong would turn the choice 32 into 32.0 in every row."""
        for tid, raw in rows:
            i = int(self.at([tid])[0])
            for name, value in json.loads(raw).items():
                key, is_number = train_key(name), isinstance(value, int | float) and not isinstance(value, bool)
                column = self.params.get(key)
                if column is None:
                    continue
                if isinstance(column, Numbers):
                    column.values[i] = float(value) if is_number else np.nan
                else:
                    column.codes[i] = self._labels[key].code(value)

    def _attrs(self, rows: list[tuple]) -> None:
        """Worker and device as codes, the rare notes (fail reason, retry of) by position. Each
        distinct JSON text is decoded once: one worker's name is the same text in thousands of rows."""
        if not rows:
            return
        tids, keys, raws = zip(*rows, strict=True)
        at = self.at(tids)
        distinct = {raw: i for i, raw in enumerate(dict.fromkeys(raws))}
        raw_code = np.fromiter(map(distinct.__getitem__, raws), dtype=np.int64, count=len(raws))
        decoded = [json.loads(raw) for raw in distinct]
        key_of = np.array(keys)
        for key in set(keys):
            mine = key_of == key
            if key in ("worker", "device"):
                used = np.unique(raw_code[mine])
                lookup = np.full(len(decoded), -1, dtype=np.int32)
                lookup[used] = [self._labels[key].code(decoded[i]) for i in used.tolist()]
                getattr(self, key).codes[at[mine]] = lookup[raw_code[mine]]
                continue
            for i, code in zip(at[mine].tolist(), raw_code[mine].tolist(), strict=True):
                self.notes.setdefault(i, {})[key] = decoded[code]


def _cell(column: Numbers | Codes, at: int) -> Any:
    """One trial's value of a column as Python; None where it has none."""
    if isinstance(column, Codes):
        code = int(column.codes[at])
        return None if code < 0 else column.labels[code]
    value = float(column.values[at])
    return None if np.isnan(value) else value


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


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
class WorkerRow:
    pid: int
    study: str
    trial_number: int | None  # the trial it runs now; None between trials
    started: float


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
        self._found: set[str] = set()  # tables known to exist

    def close(self) -> None:
        self.engine.dispose()

    def has_schema(self) -> bool:
        """False until the engine has created the database and Optuna's whole schema in it (once
        there, it stays: asked once, not at every read of every tick)."""
        if "version_info" in self._found:
            return True
        try:
            with self.engine.connect() as conn:
                found = optuna_sql.has_schema(conn)
        except sa.exc.DBAPIError:  # no database file yet (read-only connections do not create it)
            return False
        if found:
            self._found.add("version_info")
        return found

    def _ours(self, conn: sa.Connection, table: sa.Table) -> bool:
        """Whether one of our tables exists: a study plain Optuna wrote has none of them (until an
        engine of ours opens the database; a table never goes away, so a found one is remembered)."""
        if table.name not in self._found and sa.inspect(conn).has_table(table.name):
            self._found.add(table.name)
        return table.name in self._found

    # ------------------------------------------------------------ studies

    def studies(self, stats: bool = True) -> list[StudyRow]:
        """Every study; without `stats` no counts or best (those scan every trial: at 100,000 trials
        more than a tick's worth, so the dashboard takes them from its own copy of the trials)."""
        if not self.has_schema():
            return []
        with self.engine.connect() as conn:
            listed = optuna_sql.studies(conn)
            directions = optuna_sql.directions(conn)
            counts = optuna_sql.state_counts(conn) if stats else {}
            best = optuna_sql.best_values(conn, directions) if stats else {}
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

    def completed_values(self, study_id: int) -> list[tuple[int, float]]:
        with self.engine.connect() as conn:
            return optuna_sql.completed_values(conn, study_id)

    def progress(self, study_id: int, buckets: int) -> tuple[list[int], list[float]]:
        """A study list's live columns: trials finished per stretch of time, and the durations of
        the latest finished trials (for the ETA)."""
        with self.engine.connect() as conn:
            return (optuna_sql.finished_histogram(conn, study_id, buckets),
                    optuna_sql.durations(conn, study_id, RECENT_DURATIONS))

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
            attrs = optuna_sql.study_attr(conn, study_id, STUDY_ATTR)
        return attrs.get("data") if isinstance(attrs, dict) else None

    # ------------------------------------------------------------ trials

    def trial_batch(self, study_id: int, after_id: int = 0, trial_ids: Iterable[int] = (),
                    limit: int | None = None) -> TrialBatch:
        """The study's trials with id > after_id (the first `limit`), plus the given ids: one query
        per table, however many trials (`Trials.merged` decodes them)."""
        with self.engine.connect() as conn:
            base = optuna_sql.trials(conn, study_id, after_id, limit)
            known = {row[0] for row in base}
            base += [row for row in optuna_sql.trials_by_id(conn, sorted(set(trial_ids) - known))]
            if not base:
                return TrialBatch([])
            ids = [row[0] for row in base]
            epochs: list[tuple] = []
            if self._ours(conn, epoch_rows):  # ids inline (ints from the database): a page is 25,000 of them
                epochs = optuna_sql.fetch(conn, f"SELECT trial_id, COUNT(*) FROM {epoch_rows.name} WHERE trial_id IN "
                                                f"({','.join(map(str, ids))}) GROUP BY trial_id")
            waiting = [row[0] for row in base if optuna_sql.state_name(row[2]) == "WAITING"]
            return TrialBatch(base, optuna_sql.trial_values(conn, ids), optuna_sql.trial_params(conn, ids),
                              optuna_sql.user_attr_rows(conn, ids), epochs,
                              optuna_sql.fixed_params(conn, waiting) if waiting else [])

    def trials(self, study_id: int, trial_ids: Iterable[int] | None = None, after_id: int = 0) -> list[TrialRow]:
        """Trials with id > after_id, plus the given ids, as rows."""
        trials = Trials().merged(self.trial_batch(study_id, after_id, trial_ids or ()))
        return [trials.row_at(at) for at in range(trials.n)]

    def trial(self, study_id: int, number: int) -> TrialRow | None:
        """One trial by number, read alone (a detail view of a 100,000-trial study)."""
        with self.engine.connect() as conn:
            tid = conn.execute(sa.text("SELECT trial_id FROM trials WHERE study_id = :s AND number = :n"),
                               {"s": study_id, "n": number}).scalar()
        if tid is None:
            return None
        return Trials().merged(self.trial_batch(study_id, int(tid), [int(tid)], limit=0)).row(number)

    def trial_count(self, study_id: int) -> int:
        with self.engine.connect() as conn:
            return optuna_sql.count_trials(conn, study_id)

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

    def samples_between(self, start: float, end: float, host: str | None = None) -> list[Sample]:
        """Every host's readings in [start, end] (or one host's); none for a database Optuna wrote
        without us."""
        if not self.has_schema():
            return []
        query = sa.select(samples).where(samples.c.ts >= start, samples.c.ts <= end)
        if host is not None:
            query = query.where(samples.c.host == host)
        with self.engine.connect() as conn:
            if not self._ours(conn, samples):
                return []
            rows = conn.execute(query.order_by(samples.c.ts)).mappings().all()
        return [_sample(r) for r in rows]

    def workers_on(self, host: str) -> dict[int, WorkerRow]:
        """The workers on `host` that have not exited, by pid (the newest row where a pid came
        back): whose trial a process on a GPU runs."""
        if not self.has_schema():
            return {}
        with self.engine.connect() as conn:
            if not self._ours(conn, workers):
                return {}
            names = dict(optuna_sql.studies(conn))
            rows = conn.execute(sa.select(workers.c.pid, workers.c.study_id, workers.c.trial_number,
                                          workers.c.started).where(
                workers.c.host == host, workers.c.state != WorkerState.EXITED).order_by(workers.c.id)).all()
        return {pid: WorkerRow(pid, names.get(sid, f"study {sid}"), number, started)
                for pid, sid, number, started in rows}

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

    def live_workers(self, study_id: int, max_age_s: float = WORKER_LIVE_S) -> int:
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


class TrialFeed:
    """Keeps the trials of one study up to date with cheap queries per tick.

    Finished trials never change, so a poll reads only new trials and the ones not final last time.
    A long study's backlog is read in pages, the first one small: the first screenful shows at once
    and the rest follows a page a poll (`backlog` says more is waiting) while the table counts it in."""

    FIRST_PAGE = 200
    PAGE = 25_000

    def __init__(self, reader: Reader, study_id: int) -> None:
        self.reader = reader
        self.study_id = study_id
        self.trials = Trials()  # the newest snapshot
        self.version = 0  # bumped by each poll that changed something
        self.total: int | None = None  # trials in the study when the backlog was counted
        self.backlog = True  # pages of old trials still to read
        self._max_id = 0
        self._open: set[int] = set()  # trial ids not final yet

    def poll(self) -> None:
        """Read the next page of the backlog, or new trials, and those that were not final."""
        if self.total is None:
            self.total = self.reader.trial_count(self.study_id)
        limit = (self.FIRST_PAGE if not self.trials.n else self.PAGE) if self.backlog else None
        batch = self.reader.trial_batch(self.study_id, self._max_id, self._open, limit)
        if limit is not None:
            self.backlog = sum(1 for row in batch.base if row[0] > self._max_id) == limit
        if not batch.base:
            return
        for tid, _, state, _, _ in batch.base:
            self._max_id = max(self._max_id, tid)
            if state in FINAL:
                self._open.discard(tid)
            else:
                self._open.add(tid)
        before = self.trials
        if max(row[0] for row in batch.base) <= (int(before.trial_id[-1]) if before.n else -1):  # none new: changed?
            again = Trials().merged(batch)  # the few re-read trials alone, to compare (no copy of every column)
            if all(before.row(int(number)) == again.row_at(at) for at, number in enumerate(again.number.tolist())):
                return
        self.trials = before.merged(batch)
        self.version += 1

    @property
    def rows(self) -> Mapping[int, TrialRow]:
        """The trials by number, each made into a row when asked for (a script's look at a few)."""
        return _Rows(self.trials)


class _Rows(Mapping[int, TrialRow]):
    def __init__(self, trials: Trials) -> None:
        self.trials = trials

    def __getitem__(self, number: int) -> TrialRow:
        row = self.trials.row(number)
        if row is None:
            raise KeyError(number)
        return row

    def __iter__(self) -> Iterator[int]:
        return iter(self.trials.number.tolist())

    def __len__(self) -> int:
        return self.trials.n
