"""Plain SQL on Optuna's own tables: the one module that knows their layout.

Viewers and the engine's status reads go straight to the tables rather than through a Study
object: one query per question, however long the study, and no torch, no sampler, no cache. The
schema is Optuna's (`SCHEMA_VERSION`, its alembic revision); `tests/test_store.py` checks that the
installed Optuna still writes that revision, so a schema change fails a test here first.

Each function takes an open connection, so a caller can ask several questions in one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

SCHEMA_VERSION = "v3.2.0.a"  # Optuna's alembic revision (Optuna 3.2 to 5.0)
USER_ATTRS = ("worker", "device", "fail_reason", "retry_of")  # the trials' attributes a viewer shows


def state_name(value: Any) -> str:
    """`TrialState.COMPLETE` (as some drivers return enums) or `COMPLETE` -> `COMPLETE`."""
    return str(value).split(".")[-1]


def naive(value: Any) -> datetime:
    """A timestamp as SQLite (ISO text) or PostgreSQL (aware datetime) returns it, as a naive datetime."""
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).replace(tzinfo=None)


EPOCH = datetime(1970, 1, 1)  # naive: `.timestamp()` of EPOCH + t reads t as local time


def timestamps(values: Sequence[Any]) -> np.ndarray:
    """Stored datetimes (Optuna writes local naive times; None: not yet) as seconds since the epoch,
    NaN for None. Vectorised: SQLite's ISO text is parsed by numpy in one call, and the local
    time's UTC offset is looked up once per distinct hour (daylight saving changes on the hour),
    so 200,000 timestamps cost milliseconds, not a Python call each. PostgreSQL returns aware
    datetimes, converted one by one."""
    if not values:
        return np.zeros(0)
    if not isinstance(next((v for v in values if v is not None), ""), str):
        return np.array([np.nan if v is None else v.timestamp() for v in values], dtype=float)
    parsed = np.array(["NaT" if v is None else v for v in values], dtype="datetime64[us]")
    seconds = parsed.astype("int64") / 1e6  # the local wall clock read as if it were UTC
    missing = np.isnat(parsed)
    hours = np.floor(seconds[~missing] / 3600).astype("int64")
    unique, inverse = np.unique(hours, return_inverse=True)
    offsets = np.array([(EPOCH + timedelta(hours=int(h))).timestamp() - int(h) * 3600 for h in unique])
    out = np.full(len(values), np.nan)
    out[~missing] = seconds[~missing] + offsets[inverse.reshape(-1)]
    return out


def decode_param(value: float, distribution: dict[str, Any]) -> Any:
    """Optuna stores a categorical choice as its index and every other parameter as a float."""
    name = distribution.get("name")
    if name == "CategoricalDistribution":
        return distribution.get("attributes", {})["choices"][int(value)]
    if name == "IntDistribution":
        return int(value)
    return value


def _ids(values: Iterable[int]) -> str:
    """An IN list of integers (built from ints only, so nothing a user typed reaches the SQL)."""
    return ",".join(map(str, map(int, values)))


def has_schema(conn: sa.Connection) -> bool:
    """Optuna writes its version_info row after creating every table: before it exists, a new
    database is still being set up and reading `trials` could fail."""
    try:
        return bool(conn.execute(sa.text("SELECT COUNT(*) FROM version_info")).scalar())
    except sa.exc.DBAPIError:  # no table yet (SQLite, PostgreSQL)
        return False


def studies(conn: sa.Connection) -> list[tuple[int, str]]:
    return [(int(i), str(n)) for i, n in conn.execute(sa.text(
        "SELECT study_id, study_name FROM studies ORDER BY study_id"))]


def directions(conn: sa.Connection, study_id: int | None = None) -> dict[int, list[str]]:
    """`maximize`/`minimize` per objective, by study."""
    where = "" if study_id is None else f" WHERE study_id = {int(study_id)}"
    out: dict[int, list[str]] = {}
    for sid, direction in conn.execute(sa.text(
            f"SELECT study_id, direction FROM study_directions{where} ORDER BY study_id, objective")):
        out.setdefault(int(sid), []).append(state_name(direction).lower())
    return out


def state_counts(conn: sa.Connection, study_id: int | None = None) -> dict[int, dict[str, int]]:
    """Trials by Optuna state, by study (one study, or all of them in one query)."""
    where = "" if study_id is None else f" WHERE study_id = {int(study_id)}"
    out: dict[int, dict[str, int]] = {}
    for sid, state, n in conn.execute(sa.text(f"SELECT study_id, state, COUNT(*) FROM trials{where} "
                                              "GROUP BY study_id, state")):
        out.setdefault(int(sid), {})[state_name(state)] = int(n)
    return out


def best_values(conn: sa.Connection, by_study: dict[int, list[str]]) -> dict[int, float]:
    """The best first-objective value of each single-objective study in `by_study` (its
    directions); a study with several objectives has a Pareto front, not a best."""
    best: dict[int, float] = {}
    for agg, direction in (("MAX", "maximize"), ("MIN", "minimize")):
        ids = [sid for sid, d in by_study.items() if d == [direction]]
        if not ids:
            continue
        rows = conn.execute(sa.text(
            f"SELECT t.study_id, {agg}(v.value) FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id "
            f"WHERE t.state = 'COMPLETE' AND v.objective = 0 AND t.study_id IN ({_ids(ids)}) GROUP BY t.study_id"))
        best.update({int(sid): float(v) for sid, v in rows if v is not None})
    return best


def values_of(conn: sa.Connection, study_id: int, numbers: Iterable[int]) -> dict[int, float]:
    """First-objective values of those of the given trials that completed."""
    wanted = sorted({int(n) for n in numbers})
    if not wanted:
        return {}
    rows = conn.execute(sa.text(
        "SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
        f"WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.objective = 0 AND t.number IN ({_ids(wanted)})"),
        {"s": study_id})
    return {int(n): float(v) for n, v in rows if v is not None}


def durations(conn: sa.Connection, study_id: int, last: int) -> list[float]:
    """Seconds taken by the most recent finished (complete or pruned) trials."""
    rows = conn.execute(sa.text(
        "SELECT datetime_start, datetime_complete FROM trials WHERE study_id = :s "
        "AND state IN ('COMPLETE', 'PRUNED') AND datetime_complete IS NOT NULL "
        "ORDER BY trial_id DESC LIMIT :n"), {"s": study_id, "n": last}).all()
    return [(naive(end) - naive(start)).total_seconds() for start, end in rows]


def completed_values(conn: sa.Connection, study_id: int) -> list[tuple[int, float]]:
    """(number, first-objective value) of every completed trial, by number: a history chart's
    points, without the rest of each trial."""
    rows = conn.execute(sa.text(
        "SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
        "WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.objective = 0 ORDER BY t.number"), {"s": study_id})
    return [(int(n), float(v)) for n, v in rows if v is not None]


def finished_histogram(conn: sa.Connection, study_id: int, buckets: int) -> list[int]:
    """Trials finished (complete or pruned) in each of `buckets` equal stretches of time from the
    study's first finished trial's start to its last finish; empty before one finished. One scan,
    counted in SQL at bucket edges bound as datetimes (so SQLite's text and PostgreSQL's
    timestamps compare alike), never a row per trial to Python."""
    finished = "FROM trials WHERE study_id = :s AND state IN ('COMPLETE', 'PRUNED')"
    first, last = conn.execute(sa.text(f"SELECT MIN(datetime_start), MAX(datetime_complete) {finished}"),
                               {"s": study_id}).one()
    if first is None or last is None:
        return []
    start, step = naive(first), (naive(last) - naive(first)) / buckets
    edges = [sa.bindparam(f"e{i}", start + step * i, type_=sa.DateTime) for i in range(1, buckets)]
    below = "".join(f", SUM(CASE WHEN datetime_complete < :e{i} THEN 1 ELSE 0 END)" for i in range(1, buckets))
    row = conn.execute(sa.text(f"SELECT COUNT(*){below} {finished}").bindparams(*edges), {"s": study_id}).one()
    cumulative = [int(n or 0) for n in row[1:]] + [int(row[0])]
    return [n - before for before, n in zip([0, *cumulative[:-1]], cumulative, strict=True)]


def stale_trials(conn: sa.Connection, study_id: int, grace_s: float) -> set[int]:
    """Numbers of RUNNING trials whose last heartbeat is older than `grace_s`, by the database's
    clock (as Optuna judges it: workers on other machines have other clocks)."""
    now = naive(conn.execute(sa.select(sa.func.now())).scalar())
    rows = conn.execute(sa.text(
        "SELECT t.number, h.heartbeat FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :s AND t.state = 'RUNNING'"), {"s": study_id}).all()
    return {int(n) for n, beat in rows if (now - naive(beat)).total_seconds() > grace_s}


def study_attr(conn: sa.Connection, study_id: int, key: str) -> Any:
    """One user attribute of a study (None when unset), as `study.user_attrs[key]` would give it."""
    value = conn.execute(sa.text("SELECT value_json FROM study_user_attributes WHERE study_id = :s AND key = :k"),
                         {"s": study_id, "k": key}).scalar()
    return json.loads(value) if value is not None else None


TRIAL_COLUMNS = "trial_id, number, state, datetime_start, datetime_complete"


def fetch(conn: sa.Connection, sql: str) -> list[tuple]:
    """Rows straight from the driver's cursor, for the reads whose size grows with the study:
    SQLAlchemy's rows cost more than the query itself at 100,000 of them. Only for SQL built from
    integers (`_ids`), so nothing a user typed reaches it."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        cursor.close()


def trials(conn: sa.Connection, study_id: int, after_id: int, limit: int | None = None) -> list[tuple]:
    """(trial_id, number, state, start, complete) of the study's trials with id > after_id (the
    first `limit` of them), by id, which is by number within a study. States and times as stored
    (`state_name`, `timestamps`). The unary plus keeps SQLite off the study index, which would
    visit every trial of the study: the id range is the narrow condition on a poll."""
    page = f" LIMIT {int(limit)}" if limit is not None else ""
    return fetch(conn, f"SELECT {TRIAL_COLUMNS} FROM trials WHERE +study_id = {int(study_id)} "
                        f"AND trial_id > {int(after_id)} ORDER BY trial_id{page}")


def trials_by_id(conn: sa.Connection, trial_ids: Iterable[int]) -> list[tuple]:
    """The same fields of the given trials (those a viewer saw unfinished last time)."""
    ids = _ids(trial_ids)
    return fetch(conn, f"SELECT {TRIAL_COLUMNS} FROM trials WHERE trial_id IN ({ids}) ORDER BY trial_id") \
        if ids else []


def count_trials(conn: sa.Connection, study_id: int) -> int:
    return int(conn.execute(sa.text("SELECT COUNT(*) FROM trials WHERE study_id = :s"), {"s": study_id}).scalar())


def trial_values(conn: sa.Connection, trial_ids: list[int]) -> list[tuple[int, int, float | None]]:
    """(trial_id, objective, value) rows."""
    return fetch(conn, f"SELECT trial_id, objective, value FROM trial_values WHERE trial_id IN ({_ids(trial_ids)})")


def trial_params(conn: sa.Connection, trial_ids: list[int]) -> list[tuple[int, str, float, str]]:
    """(trial_id, param_name, stored value, distribution JSON) rows, as stored: `decode_param`
    turns a stored value into the parameter's value."""
    return fetch(conn, "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
                        f"WHERE trial_id IN ({_ids(trial_ids)}) ORDER BY param_id")


def set_param_value(conn: sa.Connection, trial_id: int, name: str, value: float) -> None:
    """Change a running trial's stored parameter value: a PBT mutation, which Optuna's API (made
    for parameters sampled once) cannot record."""
    conn.execute(sa.text("UPDATE trial_params SET param_value = :value WHERE trial_id = :trial AND param_name = :name"),
                 {"value": value, "trial": trial_id, "name": name})


def fixed_params(conn: sa.Connection, trial_ids: list[int]) -> list[tuple[int, str]]:
    """(trial_id, JSON of {name: value}) of enqueued trials: Optuna keeps the params a trial was
    queued with aside, as a system attribute, until a worker takes the trial."""
    return fetch(conn, "SELECT trial_id, value_json FROM trial_system_attributes WHERE key = 'fixed_params' "
                        f"AND trial_id IN ({_ids(trial_ids)})")


def user_attr_rows(conn: sa.Connection, trial_ids: list[int], keys: Iterable[str] = USER_ATTRS
                   ) -> list[tuple[int, str, str]]:
    """(trial_id, key, value JSON) rows of the given attributes."""
    quoted = ",".join(f"'{k}'" for k in keys if k.isidentifier())
    return fetch(conn, "SELECT trial_id, key, value_json FROM trial_user_attributes "
                        f"WHERE trial_id IN ({_ids(trial_ids)}) AND key IN ({quoted})")


def user_attrs(conn: sa.Connection, trial_ids: list[int], keys: Iterable[str] = USER_ATTRS
               ) -> dict[int, dict[str, Any]]:
    attrs: dict[int, dict[str, Any]] = {}
    for tid, key, value in user_attr_rows(conn, trial_ids, keys):
        attrs.setdefault(int(tid), {})[key] = json.loads(value)
    return attrs


def intermediate(conn: sa.Connection, trial_ids: Iterable[int]) -> dict[int, list[tuple[int, float]]]:
    """Each trial's reported values by step (the learning curves the pruner sees)."""
    ids = _ids(trial_ids)
    if not ids:
        return {}
    out: dict[int, list[tuple[int, float]]] = {}
    for tid, step, value in conn.execute(sa.text(
            "SELECT trial_id, step, intermediate_value FROM trial_intermediate_values "
            f"WHERE trial_id IN ({ids}) ORDER BY step")):
        if value is not None:
            out.setdefault(int(tid), []).append((int(step), float(value)))
    return out
