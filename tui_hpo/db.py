"""What the TUI reads: the database, through a read-only connection, turned into frozen rows.

Optuna's tables are read with plain SQL (their schema is stable and public through the `optuna`
CLI), so the viewer never loads a Study object and never imports torch. Trials are read
incrementally: finished trials never change, so a poll fetches only new trials and the ones that
were still running, which keeps a tick cheap at 10,000 trials.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.storage import make_engine
from engine.storage.states import SweepState, finished_count
from tui_hpo import clock

FINAL = ("COMPLETE", "PRUNED", "FAIL")


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def _state(value: Any) -> str:
    return str(value).split(".")[-1]


@dataclass(frozen=True)
class StudyRow:
    study_id: int
    name: str
    directions: tuple[str, ...]
    metrics: tuple[str, ...]
    n_trials: int | None
    state: str  # the sweep's state, or "external" for a study tui-hpo did not create
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
    params: dict[str, Any]
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


def _decode_param(value: float, distribution: dict[str, Any]) -> Any:
    """Optuna stores a categorical choice as its index; other params as their float value."""
    name = distribution.get("name")
    attrs = distribution.get("attributes", {})
    if name == "CategoricalDistribution":
        return attrs["choices"][int(value)]
    if name == "IntDistribution":
        return int(value)
    return value


class Reader:
    """Read-only queries of one database. Safe to call from a worker thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url, readonly=True)
        self._dists: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.engine.dispose()

    def has_schema(self) -> bool:
        """Optuna writes its version_info row after creating every table: before that row exists
        the engine is still creating the schema, and reading `trials` could fail."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text("SELECT COUNT(*) FROM version_info")).scalar() > 0
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no table yet (SQLite, PostgreSQL)
            return False

    # ------------------------------------------------------------ studies

    def studies(self) -> list[StudyRow]:
        if not self.has_schema():
            return []
        with self.engine.connect() as conn:
            studies = conn.execute(sa.text("SELECT study_id, study_name FROM studies ORDER BY study_id")).all()
            directions: dict[int, list[str]] = {}
            for sid, direction in conn.execute(sa.text(
                    "SELECT study_id, direction FROM study_directions ORDER BY study_id, objective")):
                directions.setdefault(sid, []).append(_state(direction).lower())
            counts: dict[int, dict[str, int]] = {}
            for sid, state, n in conn.execute(sa.text(
                    "SELECT study_id, state, COUNT(*) FROM trials GROUP BY study_id, state")):
                counts.setdefault(sid, {})[_state(state)] = int(n)
            sweeps = {}
            if sa.inspect(conn).has_table("hpo_sweep"):
                for row in conn.execute(sa.text("SELECT study_id, n_trials, state, created, updated, config "
                                                "FROM hpo_sweep")).mappings():
                    sweeps[row["study_id"]] = row
            best = self._best_values(conn, directions)
        out = []
        for sid, name in studies:
            sweep = sweeps.get(sid)
            config = json.loads(sweep["config"]) if sweep else {}
            metric = (config.get("objective") or {}).get("metric", "value")
            metrics = tuple(metric) if isinstance(metric, list) else (metric,)
            out.append(StudyRow(
                study_id=sid, name=name, directions=tuple(directions.get(sid, [])), metrics=metrics,
                n_trials=sweep["n_trials"] if sweep else None, state=sweep["state"] if sweep else SweepState.EXTERNAL,
                counts=counts.get(sid, {}), best=best.get(sid),
                created=sweep["created"] if sweep else None, updated=sweep["updated"] if sweep else None))
        return out

    def study(self, name: str) -> StudyRow | None:
        return next((s for s in self.studies() if s.name == name), None)

    @staticmethod
    def _best_values(conn: sa.Connection, directions: dict[int, list[str]]) -> dict[int, float]:
        best = {}
        for agg in ("MAX", "MIN"):
            ids = [sid for sid, d in directions.items() if len(d) == 1 and (d[0] == "maximize") == (agg == "MAX")]
            if not ids:
                continue
            rows = conn.execute(sa.text(
                f"SELECT t.study_id, {agg}(v.value) FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id "
                "WHERE t.state = 'COMPLETE' AND v.objective = 0 GROUP BY t.study_id"))
            best.update({sid: float(v) for sid, v in rows if sid in ids and v is not None})
        return best

    def sweep_config(self, study_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("hpo_sweep"):
                return {}
            text = conn.execute(sa.text("SELECT config FROM hpo_sweep WHERE study_id = :s"), {"s": study_id}).scalar()
        return json.loads(text) if text else {}

    # ------------------------------------------------------------ trials

    def trials(self, study_id: int, trial_ids: Iterable[int] | None = None, after_id: int = 0) -> list[TrialRow]:
        """Trials with id > after_id, plus the given ids (those that were not final last time)."""
        ids = sorted(set(trial_ids or ()))
        also = f" OR trial_id IN ({','.join(map(str, ids))})" if ids else ""
        where = f"study_id = :s AND (trial_id > :after{also})"
        with self.engine.connect() as conn:
            base = conn.execute(sa.text(
                f"SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE {where} "
                "ORDER BY number"), {"s": study_id, "after": after_id}).all()
            if not base:
                return []
            wanted = ",".join(str(r[0]) for r in base)
            values: dict[int, dict[int, float]] = {}
            for tid, objective, value in conn.execute(sa.text(
                    f"SELECT trial_id, objective, value FROM trial_values WHERE trial_id IN ({wanted})")):
                values.setdefault(tid, {})[objective] = value
            params: dict[int, dict[str, Any]] = {}
            for tid, name, value, dist in conn.execute(sa.text(
                    "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
                    f"WHERE trial_id IN ({wanted}) ORDER BY param_id")):
                params.setdefault(tid, {})[name] = _decode_param(value, self._dist(dist))
            attrs: dict[int, dict[str, Any]] = {}
            for tid, key, value in conn.execute(sa.text(
                    "SELECT trial_id, key, value_json FROM trial_user_attributes "
                    f"WHERE trial_id IN ({wanted}) AND key IN ('worker', 'device', 'fail_reason', 'retry_of')")):
                attrs.setdefault(tid, {})[key] = json.loads(value)
            epochs: dict[int, int] = {}
            if sa.inspect(conn).has_table("hpo_epoch"):
                for tid, n in conn.execute(sa.text(
                        f"SELECT trial_id, COUNT(*) FROM hpo_epoch WHERE trial_id IN ({wanted}) GROUP BY trial_id")):
                    epochs[tid] = int(n)
        rows = []
        for tid, number, state, start, complete in base:
            vals = values.get(tid)
            a = attrs.get(tid, {})
            rows.append(TrialRow(
                trial_id=tid, number=number, state=_state(state),
                values=tuple(vals[k] for k in sorted(vals)) if vals else None,
                params=params.get(tid, {}), start=_ts(start), complete=_ts(complete),
                worker=a.get("worker"), device=a.get("device"), fail_reason=a.get("fail_reason"),
                epoch=epochs.get(tid, 0), retry_of=a.get("retry_of")))
        return rows

    def _dist(self, text: str) -> dict[str, Any]:
        if text not in self._dists:
            self._dists[text] = json.loads(text)
        return self._dists[text]

    def intermediate(self, trial_ids: Iterable[int]) -> dict[int, list[tuple[int, float]]]:
        ids = ",".join(str(int(t)) for t in trial_ids)
        if not ids:
            return {}
        out: dict[int, list[tuple[int, float]]] = {}
        with self.engine.connect() as conn:
            for tid, step, value in conn.execute(sa.text(
                    "SELECT trial_id, step, intermediate_value FROM trial_intermediate_values "
                    f"WHERE trial_id IN ({ids}) ORDER BY step")):
                if value is not None:
                    out.setdefault(tid, []).append((int(step), float(value)))
        return out

    def epochs(self, trial_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM hpo_epoch WHERE trial_id = :t ORDER BY fold, epoch"),
                                {"t": trial_id}).mappings().all()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------ system, events, workers

    def latest_samples(self, max_age_s: float = 30.0) -> list[Sample]:
        """The newest reading of each host that reported within max_age_s."""
        if not self.has_schema():
            return []
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("hpo_sample"):
                return []
            rows = conn.execute(sa.text(
                "SELECT s.* FROM hpo_sample s JOIN (SELECT host, MAX(id) AS id FROM hpo_sample WHERE ts > :since "
                "GROUP BY host) m ON s.id = m.id ORDER BY s.host"), {"since": clock.now() - max_age_s}).mappings().all()
        return [_sample(r) for r in rows]

    def samples_between(self, start: float, end: float) -> list[Sample]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM hpo_sample WHERE ts >= :a AND ts <= :b ORDER BY ts"),
                                {"a": start, "b": end}).mappings().all()
        return [_sample(r) for r in rows]

    def events(self, study_id: int, after_id: int = 0, trial_number: int | None = None,
               limit: int = 200) -> list[Event]:
        query = "SELECT id, ts, level, kind, message, trial_number FROM hpo_event WHERE study_id = :s AND id > :a"
        if trial_number is not None:
            query += " AND trial_number = :n"
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("hpo_event"):
                return []
            rows = conn.execute(sa.text(query + " ORDER BY id DESC LIMIT :l"),
                                {"s": study_id, "a": after_id, "n": trial_number, "l": limit}).all()
        return [Event(*r) for r in reversed(rows)]

    def live_workers(self, study_id: int, max_age_s: float = 60.0) -> int:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("hpo_worker"):
                return 0
            return int(conn.execute(sa.text(
                "SELECT COUNT(*) FROM hpo_worker WHERE study_id = :s AND state != 'exited' AND last_seen > :t"),
                {"s": study_id, "t": clock.now() - max_age_s}).scalar() or 0)


def _sample(r: Any) -> Sample:
    return Sample(host=r["host"], ts=r["ts"], cpu_percent=r["cpu_percent"] or 0.0,
                  cpu_per_core=tuple(json.loads(r["cpu_per_core"] or "[]")), ram_percent=r["ram_percent"] or 0.0,
                  ram_used_mb=r["ram_used_mb"] or 0.0, disk_free_gb=r["disk_free_gb"],
                  gpus=tuple(json.loads(r["gpus"] or "[]")))


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
