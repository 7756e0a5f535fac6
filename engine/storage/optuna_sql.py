"""Plain SQL on Optuna's own tables: the one module that knows their layout.

Viewers and the engine's status reads go straight to the tables rather than through a Study
object: one query per question, however long the study, and no torch, no sampler, no cache. The
schema is Optuna's (`SCHEMA_VERSION`, its alembic revision); `tests/test_store.py` checks that the
installed Optuna still writes that revision, so a schema change fails a test here first.

Each function takes an open connection, so a caller can ask several questions in one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = "v3.2.0.a"  # Optuna's alembic revision (Optuna 3.2 to 5.0)
USER_ATTRS = ("worker", "device", "fail_reason", "retry_of")  # the trials' attributes a viewer shows


def state_name(value: Any) -> str:
    """`TrialState.COMPLETE` (as some drivers return enums) or `COMPLETE` -> `COMPLETE`."""
    return str(value).split(".")[-1]


def naive(value: Any) -> datetime:
    """A timestamp as SQLite (ISO text) or PostgreSQL (aware datetime) returns it, as a naive datetime."""
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).replace(tzinfo=None)


def timestamp(value: Any) -> float | None:
    """A stored datetime (Optuna writes local naive times) as seconds since the epoch."""
    if value is None:
        return None
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).timestamp()


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
    return ",".join(str(int(v)) for v in values)


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


def trials(conn: sa.Connection, study_id: int, trial_ids: Iterable[int], after_id: int) -> list[tuple]:
    """(trial_id, number, state, start, complete) of the trials with id > after_id, plus the given
    ids; by number. Times as seconds since the epoch."""
    also = f" OR trial_id IN ({_ids(trial_ids)})" if trial_ids else ""
    rows = conn.execute(sa.text(
        "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
        f"WHERE study_id = :s AND (trial_id > :after{also}) ORDER BY number"), {"s": study_id, "after": after_id})
    return [(int(tid), int(n), state_name(s), timestamp(a), timestamp(b)) for tid, n, s, a, b in rows]


def trial_values(conn: sa.Connection, trial_ids: list[int]) -> dict[int, tuple[float, ...]]:
    values: dict[int, dict[int, float]] = {}
    for tid, objective, value in conn.execute(sa.text(
            f"SELECT trial_id, objective, value FROM trial_values WHERE trial_id IN ({_ids(trial_ids)})")):
        values.setdefault(int(tid), {})[int(objective)] = value
    return {tid: tuple(v[k] for k in sorted(v)) for tid, v in values.items()}


def trial_params(conn: sa.Connection, trial_ids: list[int], distributions: dict[str, dict[str, Any]]
                 ) -> dict[int, dict[str, Any]]:
    """Decoded params by trial; `distributions` caches the parsed distribution JSON across calls."""
    params: dict[int, dict[str, Any]] = {}
    for tid, name, value, dist in conn.execute(sa.text(
            "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
            f"WHERE trial_id IN ({_ids(trial_ids)}) ORDER BY param_id")):
        if dist not in distributions:
            distributions[dist] = json.loads(dist)
        params.setdefault(int(tid), {})[name] = decode_param(value, distributions[dist])
    return params


def user_attrs(conn: sa.Connection, trial_ids: list[int], keys: Iterable[str] = USER_ATTRS
               ) -> dict[int, dict[str, Any]]:
    quoted = ",".join(f"'{k}'" for k in keys if k.isidentifier())
    attrs: dict[int, dict[str, Any]] = {}
    for tid, key, value in conn.execute(sa.text(
            "SELECT trial_id, key, value_json FROM trial_user_attributes "
            f"WHERE trial_id IN ({_ids(trial_ids)}) AND key IN ({quoted})")):
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
