"""Each finished trial (complete, pruned or failed) logged as one run to W&B and/or MLflow: the
opt-in `integrations:` section. A run holds the trial's parameters (the fixed values with the
sampled ones over them), its per-epoch (a program's per-step) metrics at their steps, the final
value of each objective, its state and duration; its name and tags give the study and the trial.

Why the trackers' own clients and not optuna-integration's `WeightsAndBiasesCallback` and
`MLflowCallback` (called as `callback(study, frozen_trial)`): they log the parameters and the
final value only, never the per-epoch metrics a tracker's charts are for, so those would need
these clients anyway; `WeightsAndBiasesCallback` logs the whole study into one W&B run unless
`as_multirun`, and `MLflowCallback` works through MLflow's fluent API, whose active run is global
to the process. `wandb.init` per trial and an `MlflowClient` give one run per trial with every
step, and one dependency fewer.

A tracker that fails (no network, a full disk, a bad key) never fails the trial: the worker
records a warning event and goes on. After MAX_FAILURES failures in a row a tracker is left off
for the rest of the worker, so a server that is down does not hold every trial for its timeouts.
wandb and mlflow are imported only when configured: a worker without them starts as fast as ever.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from engine.config.space import train_params
from engine.errors import ConfigError, one_line
from engine.storage.states import EventKind

if TYPE_CHECKING:
    import optuna

    from engine.config import SweepConfig
    from engine.config.schema import MlflowConfig, WandbConfig
    from engine.sweep.worker import Worker

log = logging.getLogger("tui_hpo.tracking")

# `integrations:` key -> (its name for people, the module it imports, the pip extra that installs it)
PACKAGES = {"wandb": ("W&B", "wandb", "wandb"), "mlflow": ("MLflow", "mlflow", "mlflow")}
MAX_FAILURES = 3
EPOCH_KEYS = {"trial_id", "fold", "epoch", "study_id", "ts"}  # an epoch row's keys that are not metrics
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
MLFLOW_METRICS = 1000  # MLflow's log_batch takes at most 1000 metrics and 100 params a call
MLFLOW_PARAMS = 100
MLFLOW_PARAM_CHARS = 6000
MLFLOW_NAME = re.compile(r"[^\w./\- ]")  # what MLflow refuses in a param or metric name


def configured(config: SweepConfig) -> list[str]:
    """The trackers the sweep logs to (`integrations:` keys)."""
    return [key for key in PACKAGES if getattr(config.integrations, key) is not None]


def check_available(config: SweepConfig) -> None:
    """Before the sweep starts: each configured tracker's package is installed, or one line says
    which extra installs it. Looked up, not imported: importing mlflow takes over a second."""
    for key in configured(config):
        name, module, extra = PACKAGES[key]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logging to {name} needs the {module} package: pip install 'tui-hpo[{extra}]'",
                              key=f"integrations.{key}")


# ---------------------------------------------------------------- what a run holds


class Step(NamedTuple):
    step: int
    ts: float  # when it was recorded (seconds since the epoch)
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrialRun:
    """What a tracker records of one finished trial."""

    study: str
    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    params: dict[str, Any]
    values: dict[str, float]  # each objective's final value; empty unless COMPLETE
    steps: list[Step]
    started: float | None
    ended: float | None
    duration_s: float | None
    fail_reason: str | None

    @property
    def name(self) -> str:
        return f"{self.study}-trial-{self.number}"

    def summary(self) -> dict[str, Any]:
        """The run's final numbers and facts, besides its steps."""
        out: dict[str, Any] = {f"objective/{k}": v for k, v in self.values.items()}
        out |= {"state": self.state, "trial_number": self.number, "study": self.study}
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        if self.fail_reason:
            out["fail_reason"] = self.fail_reason
        return out


def trial_run(config: SweepConfig, study: str, frozen: optuna.trial.FrozenTrial,
              epochs: list[dict[str, Any]]) -> TrialRun:
    complete = frozen.state.name == "COMPLETE" and frozen.values is not None
    values = dict(zip(config.objective.metrics(), frozen.values, strict=True)) if complete else {}
    return TrialRun(study=study, number=frozen.number, state=frozen.state.name,
                    params={**config.fixed(), **train_params(frozen.params)}, values=values, steps=steps(epochs),
                    started=_seconds(frozen.datetime_start), ended=_seconds(frozen.datetime_complete),
                    duration_s=frozen.user_attrs.get("duration_s"), fail_reason=frozen.user_attrs.get("fail_reason"))


def steps(epochs: list[dict[str, Any]]) -> list[Step]:
    """A trial's epoch rows (`Store.epochs_of`) as steps in order. The folds of k-fold share
    their epochs' steps, each metric under `fold<k>/`: W&B takes a run's steps in order only."""
    folds = {row["fold"] for row in epochs}
    found: dict[int, Step] = {}
    for row in epochs:
        prefix = f"fold{row['fold']}/" if len(folds) > 1 else ""
        step = found.setdefault(int(row["epoch"]), Step(int(row["epoch"]), float(row["ts"]), {}))
        step.metrics.update({prefix + k: float(v) for k, v in row.items()
                             if k not in EPOCH_KEYS and isinstance(v, int | float) and not isinstance(v, bool)})
    return [found[k] for k in sorted(found)]


def _seconds(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


# ---------------------------------------------------------------- the trackers


class WandbRun:
    """A W&B run per trial, under DIR/<study>/wandb (`wandb sync` uploads an offline one)."""

    def __init__(self, section: WandbConfig, folder: Path) -> None:
        import wandb

        self.wandb, self.section, self.folder = wandb, section, folder

    def log(self, run: TrialRun) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # The run starts once the trial has ended: the worker's system metrics, the console and
        # the code would say nothing about the trial. (Private x_ settings may go: only known ones.)
        wanted = {"console": "off", "silent": True, "disable_git": True, "save_code": False,
                  "x_disable_stats": True, "x_save_requirements": False}
        settings = self.wandb.Settings(**{k: v for k, v in wanted.items() if k in self.wandb.Settings.model_fields})
        wb = self.wandb.init(project=self.section.project, entity=self.section.entity, mode=self.section.mode,
                             dir=str(self.folder), name=run.name, group=run.study, job_type="trial",
                             tags=[run.study[:64], run.state], config=run.params, reinit="create_new",
                             settings=settings)
        try:
            for step in run.steps:
                wb.log(step.metrics, step=step.step)
            wb.summary.update(run.summary())
        finally:
            wb.finish(exit_code=1 if run.state == "FAIL" else 0)


class MlflowRun:
    """An MLflow run per trial through `MlflowClient` (no global active run), in the experiment
    named after the study unless `experiment` says otherwise."""

    def __init__(self, section: MlflowConfig, folder: Path, study: str) -> None:
        uri = section.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder / 'mlflow.db'}"
        if "://" not in uri or uri.startswith("file:"):
            # MLflow 3 keeps its file store only for those who ask; a file URI here is asking. (Set for
            # the process: MLflow looks each time it opens the store. A trial's program inherits it.)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        elif uri.startswith("sqlite:"):
            folder.mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        self.experiment = section.experiment or study
        self._experiment_id: str | None = None

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = str(self.client.create_experiment(self.experiment))
                    return self._experiment_id
                except MlflowException:  # another worker created it first
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            self._experiment_id = str(found.experiment_id)
        return self._experiment_id

    def log(self, run: TrialRun) -> None:
        from mlflow.entities import Metric, Param

        tags = {"study": run.study, "trial_number": str(run.number), "state": run.state}
        if run.fail_reason:
            tags |= {"fail_reason": run.fail_reason, "mlflow.note.content": run.fail_reason}
        created = self.client.create_run(self.experiment_id(), start_time=_ms(run.started), tags=tags,
                                         run_name=run.name)
        run_id, status = created.info.run_id, "FAILED"
        try:
            params = [Param(_mlflow_name(k), _text(v)) for k, v in run.params.items()]
            metrics = [Metric(_mlflow_name(k), v, _ms(s.ts), s.step) for s in run.steps for k, v in s.metrics.items()]
            # The final numbers at the last step: MLflow shows a metric's latest value as the run's
            last = run.steps[-1].step if run.steps else 0
            ended = _ms(run.ended) or int(time.time() * 1000)
            final = {k: v for k, v in run.summary().items() if isinstance(v, int | float) and k != "trial_number"}
            metrics += [Metric(_mlflow_name(k), float(v), ended, last) for k, v in final.items()]
            for i in range(0, len(params), MLFLOW_PARAMS):
                self.client.log_batch(run_id, params=params[i:i + MLFLOW_PARAMS])
            for i in range(0, len(metrics), MLFLOW_METRICS):
                self.client.log_batch(run_id, metrics=metrics[i:i + MLFLOW_METRICS])
            status = MLFLOW_STATUS[run.state]
        finally:
            self.client.set_terminated(run_id, status, end_time=_ms(run.ended))


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _mlflow_name(name: str) -> str:
    return MLFLOW_NAME.sub("_", name)[:250]


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MLFLOW_PARAM_CHARS]


# ---------------------------------------------------------------- the worker's end of a trial


class Tracker:
    """One configured tracker of a worker: made on first use, and switched off after
    MAX_FAILURES failures in a row (a missing package: at once)."""

    def __init__(self, key: str) -> None:
        self.key, self.label = key, PACKAGES[key][0]
        self.client: WandbRun | MlflowRun | None = None
        self.failures = 0
        self.off = False

    def log(self, worker: Worker, run: TrialRun) -> None:
        try:
            if self.client is None:
                self.client = self._make(worker)
            self.client.log(run)
            self.failures = 0
        except Exception as exc:  # a tracker's trouble is never the trial's
            log.debug("%s logging failed", self.label, exc_info=True)
            self.failures += 1
            missing = self.client is None and isinstance(exc, ImportError)  # not installed on this machine
            self.off = missing or self.failures >= MAX_FAILURES
            why = f"{exc.__class__.__name__}: {exc}"
            if missing:
                why += f" (pip install 'tui-hpo[{PACKAGES[self.key][2]}]'); {self.label} logging is off on this worker"
            elif self.off:
                why += f"; {self.label} logging is off on this worker after {self.failures} failures in a row"
            self._warn(worker, run, why)

    def _make(self, worker: Worker) -> WandbRun | MlflowRun:
        section = getattr(worker.config.integrations, self.key)
        if self.key == "wandb":
            return WandbRun(section, worker.artifacts)
        return MlflowRun(section, worker.artifacts, worker.sweep.study_name)

    def _warn(self, worker: Worker, run: TrialRun, why: str) -> None:
        worker.event(EventKind.WORKER, one_line(f"trial {run.number} not logged to {self.label}: {why}")[:1000],
                     run.number, level="warning")


_TRACKERS: weakref.WeakKeyDictionary[Worker, list[Tracker]] = weakref.WeakKeyDictionary()


def log_trial(worker: Worker, trial: optuna.Trial) -> None:
    """Log a trial the worker has just told Optuna about to each tracker the sweep configures
    (nothing to do, and nothing read, when none is). A tracker's failure is a warning event; only
    writing that event can raise (the database's disk is full: the worker stops as it would anyway)."""
    keys = configured(worker.config)
    if not keys:
        return
    trackers = _TRACKERS.setdefault(worker, [Tracker(key) for key in keys])
    if all(t.off for t in trackers):
        return
    try:
        run = trial_run(worker.config, worker.sweep.study_name, worker.storage.get_trial(trial._trial_id),
                        worker.store.epochs_of(trial._trial_id))
    except Exception as exc:  # the database hiccuped: the trial itself is recorded already
        worker.event(EventKind.WORKER, one_line(f"trial {trial.number} not logged to trackers: {exc}")[:1000],
                     trial.number, level="warning")
        return
    for tracker in trackers:
        if not tracker.off:
            tracker.log(worker, run)
