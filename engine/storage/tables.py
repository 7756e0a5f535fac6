"""Our tables beside Optuna's (prefix `hpo_`): the sweep's control state and budget, per-epoch
metrics, system samples, an event log, the workers, commands and reruns.

Schema changes go in `MIGRATIONS`, applied in order and recorded in `hpo_schema`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from engine.storage.states import SweepState

metadata = sa.MetaData()

schema_table = sa.Table("hpo_schema", metadata, sa.Column("version", sa.Integer, nullable=False))

sweeps = sa.Table(
    "hpo_sweep", metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("study_name", sa.String(512), nullable=False, unique=True),
    sa.Column("config", sa.Text, nullable=False),  # the resolved config, JSON
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("claimed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False, server_default=SweepState.RUNNING.value),
    sa.Column("deadline", sa.Float, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

epochs = sa.Table(
    "hpo_epoch", metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fold", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    *(sa.Column(name, sa.Float) for name in ("train_loss", "val_loss", "val_accuracy", "val_f1", "lr",
                                             "samples_per_s", "peak_mem_mb", "seconds")),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("metrics", sa.Text, nullable=True),  # JSON: a program's metrics under any other names
)
EPOCH_COLUMNS = {c.name for c in epochs.columns} - {"trial_id", "fold", "epoch", "study_id", "ts", "metrics"}

samples = sa.Table(
    "hpo_sample", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("cpu_percent", sa.Float),
    sa.Column("cpu_per_core", sa.Text),  # JSON list
    sa.Column("ram_percent", sa.Float),
    sa.Column("ram_used_mb", sa.Float),
    sa.Column("disk_free_gb", sa.Float),
    sa.Column("gpus", sa.Text),  # JSON list of per-GPU readings
)

events = sa.Table(
    "hpo_event", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

workers = sa.Table(
    "hpo_worker", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("device", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)

commands = sa.Table(
    "hpo_command", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("command", sa.String(32), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("done", sa.Float, nullable=True),
)


repeats = sa.Table(
    "hpo_repeat", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, nullable=False, index=True),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("values_json", sa.Text, nullable=False),  # the objective value(s) of this run
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.UniqueConstraint("study_id", "trial_number", "seed"),
)


# What was measured per shape, (device, model, image size, batch, precision, layout, torch), kept
# across sweeps of the workspace: what torch.compile costs and gains there (`resources.compile:
# auto` decides from it), and the batch that fitted in memory when this one did not.
shapes = sa.Table(
    "hpo_shape", metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("eager_step_s", sa.Float, nullable=True),  # a steady training step, eager
    sa.Column("compiled_step_s", sa.Float, nullable=True),  # the same, compiled
    sa.Column("compile_s", sa.Float, nullable=True),  # the one-off cost of compiling (both passes)
    sa.Column("fitted_batch", sa.Integer, nullable=True),  # out of memory at this batch: this one fitted
    sa.Column("updated", sa.Float, nullable=False),
)


def _v1(conn: sa.Connection) -> None:
    for table in (sweeps, epochs, samples, events, workers, commands):
        table.create(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    """`tui-hpo repeat`: a top config retrained with another seed, one row per run."""
    repeats.create(conn, checkfirst=True)


def _v3(conn: sa.Connection) -> None:
    """Measurements per shape: compile costs and step times, the batch that fitted."""
    shapes.create(conn, checkfirst=True)


def _v4(conn: sa.Connection) -> None:
    """A program's metrics have names of its own: kept as JSON beside the built-in ones."""
    if "metrics" not in {c["name"] for c in sa.inspect(conn).get_columns("hpo_epoch")}:
        conn.execute(sa.text("ALTER TABLE hpo_epoch ADD COLUMN metrics TEXT"))


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1, _v2, _v3, _v4]


def decode_epoch(row: Any) -> dict[str, Any]:
    """A `hpo_epoch` row with a program's own metrics beside the built-in ones."""
    return {k: v for k, v in dict(row).items() if k != "metrics"} | json.loads(row["metrics"] or "{}")



def decode_sample(row: Any) -> dict[str, Any]:
    """A `hpo_sample` row as the monitor wrote it: its JSON lists decoded. Each GPU's `processes`
    (pid, used_mb) is an empty list in rows written before the monitor recorded them."""
    gpus = [{"processes": [], **gpu} for gpu in json.loads(row["gpus"] or "[]")]
    return {**row, "gpus": gpus, "cpu_per_core": json.loads(row["cpu_per_core"] or "[]")}
