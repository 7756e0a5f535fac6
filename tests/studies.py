"""Deterministic studies written straight into a database, in Optuna's schema and ours.

For viewer tests and the TUI benchmark: no training, fixed numbers, any size (10,000 trials
in a few seconds, by bulk SQL rather than one Optuna call per trial).
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

from engine.config import resolve
from engine.storage import Store, default_url, optuna_storage, study_id

T0 = datetime(2026, 11, 24, 9, 0, 0).timestamp()
CHOICES = ["test_resnet", "test_efficientnet", "test_convnext"]
# Splits as the engine stores them (engine.datasets.scan.split_sizes): the digits' 20% holdout, big
# enough to rank trials, and a three-class folder whose validation set is too small to.
DIGITS_SPLIT = {"images": 1797, "train": 1438, "val": 359, "folds": 1,
                "val_counts": {str(d): 35 if d == 8 else 36 for d in range(10)}}
SMALL_SPLIT = {"images": 195, "train": 156, "val": 39, "folds": 1, "val_counts": {"cat": 13, "dog": 13, "bird": 13}}


def make_study(workdir: Path, name: str = "demo", n_trials: int = 12, running: int = 2, epochs: int = 4,
               state: str = "running", live_worker: bool = True, now: float | None = None,
               data: dict[str, Any] | None = None, offset: float = 0.0) -> str:
    """A study of `n_trials` finished trials plus `running` running ones; returns the URL.
    Several may share a database (their trial ids follow on); `offset` moves one's values.

    `now` fixes every timestamp that would otherwise come from the clock (for snapshots). `data`
    is the split the engine would store at sweep start (engine.datasets.scan.split_sizes): with
    it, completed trials get an F1 per class of its classes (the last one weakest), and every
    fourth of them one from early stopping, as the workers write them."""
    now = time.time() if now is None else now
    workdir.mkdir(parents=True, exist_ok=True)
    url = default_url(workdir)
    storage = optuna_storage(url, heartbeat=False)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    if data is not None:
        study.set_user_attr("tui_hpo", {"metrics": ["val_f1"], "data": data})
    classes = list((data or {}).get("val_counts") or {})
    store = Store(url)
    config = resolve({}, preset="quick", environ={}, platform="cpu")
    config.train.epochs = epochs
    config.name = name
    sid = study_id(storage, name)
    store.create_sweep(sid, name, config.to_dict(), n_trials + running)
    dist_model = json.dumps({"name": "CategoricalDistribution", "attributes": {"choices": CHOICES}})
    dist_lr = json.dumps({"name": "FloatDistribution", "attributes": {"low": 0.0003, "high": 0.01, "log": True,
                                                                       "step": None}})
    trials, values, params, inter, attrs, epoch_rows = [], [], [], [], [], []
    total = n_trials + running
    with store.tx() as conn:
        first_id = int(conn.execute(sa.text("SELECT COALESCE(MAX(trial_id), 0) FROM trials")).scalar()) + 1
    for number in range(total):
        tid = first_id + number
        start = T0 + number * 5
        is_running = number >= n_trials
        state_name = "RUNNING" if is_running else ("PRUNED" if number % 5 == 4 else
                                                   ("FAIL" if number % 11 == 10 else "COMPLETE"))
        done_epochs = 2 if is_running or state_name == "PRUNED" else (0 if state_name == "FAIL" else epochs)
        value = 0.80 + 0.18 * (1 - math.exp(-number / 6)) * (0.9 + 0.1 * math.sin(number)) + offset
        trials.append({"trial_id": tid, "number": number, "study_id": sid, "state": state_name,
                       "datetime_start": datetime.fromtimestamp(start if not is_running else now - 3),
                       "datetime_complete": None if is_running else datetime.fromtimestamp(start + 4 + number % 3)})
        if state_name in ("COMPLETE", "PRUNED"):
            values.append({"trial_id": tid, "objective": 0, "value": value, "value_type": "FINITE"})
        params.append({"trial_id": tid, "param_name": "model", "param_value": float(number % 3),
                       "distribution_json": dist_model})
        params.append({"trial_id": tid, "param_name": "lr", "param_value": 0.0003 * 1.3 ** (number % 13),
                       "distribution_json": dist_lr})
        worker = f"host:{1000 + number % 2}"
        attrs.append({"trial_id": tid, "key": "worker", "value_json": json.dumps(worker)})
        attrs.append({"trial_id": tid, "key": "device", "value_json": json.dumps("cpu")})
        if state_name == "FAIL":
            attrs.append({"trial_id": tid, "key": "fail_reason",
                          "value_json": json.dumps("NonFiniteLoss: loss became nan in epoch 1")})
        if state_name == "COMPLETE" and classes:
            spread = [0.02 - 0.06 * i / max(1, len(classes) - 1) for i in range(len(classes))]
            attrs.append({"trial_id": tid, "key": "class_f1", "value_json": json.dumps(
                {c: round(min(1.0, value + d), 4) for c, d in zip(classes, spread, strict=True)})})
            if number % 4 == 0:
                attrs.append({"trial_id": tid, "key": "stopped_early", "value_json": json.dumps(
                    {"fold": 0, "after_epoch": epochs, "best_epoch": max(1, epochs - 2)})})
        for epoch in range(done_epochs):
            curve = value * (1 - 0.5 ** (epoch + 1))
            inter.append({"trial_id": tid, "step": epoch, "intermediate_value": curve,
                          "intermediate_value_type": "FINITE"})
            epoch_rows.append({"trial_id": tid, "fold": 0, "epoch": epoch, "study_id": sid, "train_loss": 1 - curve,
                               "val_loss": 1.1 - curve, "val_accuracy": curve, "val_f1": curve, "lr": 1e-3,
                               "samples_per_s": 1200.0, "peak_mem_mb": 850.0, "seconds": 1.0,
                               "ts": start + epoch + 1})
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["trials", "trial_values", "trial_params", "trial_intermediate_values",
                               "trial_user_attributes", "hpo_epoch"])
    with engine.begin() as conn:
        conn.execute(meta.tables["trials"].insert(), trials)
        if values:
            conn.execute(meta.tables["trial_values"].insert(), values)
        conn.execute(meta.tables["trial_params"].insert(), params)
        if inter:
            conn.execute(meta.tables["trial_intermediate_values"].insert(), inter)
        conn.execute(meta.tables["trial_user_attributes"].insert(), attrs)
        if epoch_rows:
            conn.execute(meta.tables["hpo_epoch"].insert(), epoch_rows)
    engine.dispose()
    store.update_sweep(sid, state=state, claimed=total)
    if live_worker:
        worker_id = store.register_worker(sid, "host", 1000, "cpu")
        store.update_worker(worker_id, state="running", trial_number=total - 1)
    store.add_sample({"host": "host", "ts": now - 1, "cpu_percent": 63.0, "cpu_per_core": [70.0, 56.0],
                      "ram_percent": 41.0, "ram_used_mb": 9800.0, "disk_free_gb": 120.0,
                      "gpus": [{"index": 0, "name": "NVIDIA H100", "util_percent": 87.0, "mem_used_mb": 30000.0,
                                "mem_total_mb": 81559.0, "temperature_c": 61.0, "power_w": 410.0}]})
    store.add_event(sid, "sweep", f"sweep '{name}' started on cpu: {total} trials, 2 worker(s)")
    store.add_event(sid, "trial_complete", "trial 0 complete: val_f1=0.8000 in 4.0s", trial_number=0)
    with store.tx() as conn:  # fixed times for everything the clock stamped
        conn.execute(sa.text("UPDATE hpo_event SET ts = :t + id"), {"t": T0})
        conn.execute(sa.text("UPDATE hpo_sweep SET created = :c, updated = :u"), {"c": T0, "u": T0 + total * 5 + 6})
        conn.execute(sa.text("UPDATE hpo_worker SET started = :t, last_seen = :n"), {"t": T0, "n": now - 1})
    store.close()
    return url


def add_samples(url: str, host: str, end: float, seconds: int = 600, gpus: int = 0, cores: int = 2,
                processes: dict[int, list[tuple[int, float]]] | None = None) -> None:
    """System samples of `host`, one a second over the `seconds` before `end`, as the engine's
    monitor writes them: CPU a slow wave (per-core readings around it), RAM rising, and on each of
    `gpus` GPUs use, memory, heat and power following the CPU. `processes` (GPU index -> (pid,
    MiB) pairs) go in the newest sample, as NVML reports the processes of one moment."""
    from engine.storage.tables import samples

    rows = []
    for step in range(seconds):
        ts = end - seconds + 1 + step
        cpu = 50 + 40 * math.sin(step / 60)
        per_core = [min(100.0, max(0.0, cpu + 10 * math.sin(step / 7 + c))) for c in range(cores)]
        devices = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "util_percent": min(100.0, cpu + 5 * i),
                    "mem_used_mb": 20000.0 + 200 * step % 40000, "mem_total_mb": 81559.0,
                    "temperature_c": 40 + cpu / 3, "power_w": 100 + 3 * cpu,
                    **({"processes": [{"pid": pid, "used_mb": mb} for pid, mb in (processes or {}).get(i, [])]}
                       if step == seconds - 1 else {})} for i in range(gpus)]
        rows.append({"host": host, "ts": ts, "cpu_percent": cpu, "cpu_per_core": json.dumps(per_core),
                     "ram_percent": 30 + 20 * step / seconds, "ram_used_mb": 8000 + 4000 * step / seconds,
                     "disk_free_gb": 120.0, "gpus": json.dumps(devices)})
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(samples.insert(), rows)
    engine.dispose()


def make_plot_study(workdir: Path, name: str = "plots", directions: tuple[str, ...] = ("maximize",),
                    n_trials: int = 30) -> str:
    """A plain Optuna study for the Analysis plots: a categorical, a log-float, an int and a float
    parameter; completed, pruned (with intermediate values up to the pruning step), failed and
    one running trial; two workers taking turns, both idle in the middle. With two directions the
    second objective is the trial's seconds (minimised) and Optuna's metric names are set. Rows
    are written in bulk, as make_study does (Optuna's add_trial costs ~0.1 s a trial). Returns the URL."""
    import warnings

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution, distribution_to_json

    workdir.mkdir(parents=True, exist_ok=True)
    url = default_url(workdir)
    storage = optuna_storage(url, heartbeat=False)
    study = optuna.create_study(study_name=name, storage=storage, directions=list(directions))
    if len(directions) > 1:
        with warnings.catch_warnings():  # experimental in Optuna; optuna-dashboard reads them too
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_f1", "seconds"][:len(directions)])
    space = {"model": CategoricalDistribution(CHOICES), "lr": FloatDistribution(1e-4, 1e-1, log=True),
             "batch_size": IntDistribution(16, 128), "dropout": FloatDistribution(0.0, 0.5)}
    sid = study_id(storage, name)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        first_id = (conn.execute(sa.text("SELECT MAX(trial_id) FROM trials")).scalar() or 0) + 1
    rows: dict[str, list[dict[str, Any]]] = {"trials": [], "trial_values": [], "trial_params": [],
                                             "trial_intermediate_values": [], "trial_user_attributes": []}
    for number in range(n_trials):
        tid = first_id + number
        params = {"model": CHOICES[number % 3], "lr": 1e-4 * 1.25 ** (number % 31),
                  "batch_size": 16 + (number * 37) % 113, "dropout": round((number * 0.13) % 0.5, 3)}
        f1 = 0.7 + 0.25 * (1 - math.exp(-number / 8)) * (0.85 + 0.15 * math.sin(number * 1.7))
        state = ("RUNNING" if number == n_trials - 1 else "FAIL" if number % 9 == 8
                 else "PRUNED" if number % 4 == 3 else "COMPLETE")
        seconds = 20.0 + (number * 7) % 30
        start = T0 + number * 40 + (300 if number >= n_trials // 2 else 0)
        end = None if state == "RUNNING" else datetime.fromtimestamp(start + seconds)
        rows["trials"].append({"trial_id": tid, "number": number, "study_id": sid, "state": state,
                               "datetime_start": datetime.fromtimestamp(start), "datetime_complete": end})
        values = [f1, seconds][:len(directions)] if state == "COMPLETE" else \
            [f1 * 0.8] if state == "PRUNED" and len(directions) == 1 else []
        rows["trial_values"] += [{"trial_id": tid, "objective": k, "value": v, "value_type": "FINITE"}
                                 for k, v in enumerate(values)]
        rows["trial_params"] += [{"trial_id": tid, "param_name": key, "param_value": space[key].to_internal_repr(v),
                                  "distribution_json": distribution_to_json(space[key])} for key, v in params.items()]
        steps = {"COMPLETE": 5, "PRUNED": 2, "RUNNING": 3, "FAIL": 1}[state]
        rows["trial_intermediate_values"] += [{"trial_id": tid, "step": step, "intermediate_value_type": "FINITE",
                                               "intermediate_value": f1 * (1 - 0.5 ** (step + 1))}
                                              for step in range(steps)]
        rows["trial_user_attributes"].append({"trial_id": tid, "key": "worker",
                                              "value_json": json.dumps(f"host:{1000 + number % 2}")})
    meta = sa.MetaData()
    meta.reflect(engine, only=list(rows))
    with engine.begin() as conn:
        for table, inserted in rows.items():
            if inserted:
                conn.execute(meta.tables[table].insert(), inserted)
    engine.dispose()
    return url
