"""Trials of a program (`objective.command`): each runs the user's own training script with its
parameters and reads the metrics it reports (engine.command). Each report is a step: recorded
(the dashboard and the Trial screen show it live), given to the pruner, and the last value of
each metric (or the results file's) is the trial's value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from engine.command import argv as cmd_argv
from engine.command import process
from engine.command.metrics import Reports, read_result
from engine.config import SweepConfig
from engine.errors import Interrupted, TrialTimeout
from engine.storage import STORAGE_ENV
from engine.storage.states import EventKind, SweepState

if TYPE_CHECKING:
    from engine.sweep.worker import Worker

CHECK_EVERY_S = 1.0  # how often a running program's trial looks for a stop or the user's prune in the database
MAX_METRIC_ATTRS = 64  # the final metrics kept on a trial (a program may report hundreds)


class MissingMetric(Exception):
    """The program ended without reporting the objective's metric."""


class ProgramFailed(Exception):
    """The program ended with an error (an exit code, a signal) or could not be started."""


@dataclass
class Prepared:
    """One run of the program: its command line, environment and files."""

    argv: list[str]
    env: dict[str, str]
    files: cmd_argv.TrialFiles


def prepare(config: SweepConfig, params: dict[str, Any], folder: Path, study: str, number: int) -> Prepared:
    """The trial's parameters written where the macros point, its command line and environment.
    The storage URL may hold a password: the program is not given it."""
    values = {**config.params, **params}
    files = cmd_argv.TrialFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cmd_argv.write_param_files(values, files)
    argv = cmd_argv.expand(list(config.objective.command or []), values, files, study, number,
                           config.objective.flags, os.environ)
    env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    return Prepared(argv, env | cmd_argv.trial_env(values, config.objective.env, files, study, number), files)


def finish(config: SweepConfig, outcome: process.Outcome, reports: Reports, files: cmd_argv.TrialFiles,
           started: float) -> dict[str, float]:
    """A program that ended by itself: its final metrics (the last reported, the results file's
    over them), or ProgramFailed with the reason."""
    failure = outcome.failure()
    if failure:
        raise ProgramFailed(failure)
    final = dict(reports.last)
    if config.objective.result_file:
        final |= _result(config, Path(config.objective.result_file), files, started)
    return final


def _result(config: SweepConfig, name: Path, files: cmd_argv.TrialFiles, started: float) -> dict[str, float]:
    """The results file's numbers by key path; one the program did not write in this run (an
    older one, from another trial) is an error, not a result."""
    path = Path(cmd_argv.MACRO.sub(lambda m: str(files.folder) if m.group(1) == "output_dir" else m.group(0),
                                   str(name)))
    path = path if path.is_absolute() else Path(config.objective.cwd or ".") / path
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        age = None
    if age is not None and age > time.monotonic() - started + 1.0:
        raise ProgramFailed(f"{path} was not written by this trial (it is {age:.0f}s old): have the program "
                            "write objective.result_file in each run, e.g. under $TUI_HPO_OUTPUT_DIR")
    return read_result(path)


def missing_metric(config: SweepConfig, metric: str, final: dict[str, float]) -> str:
    """Why a program's trial has no value: the metric it never reported, and the names it did."""
    seen = ", ".join(sorted(final)[:12]) or "nothing"
    where = "its results file" if config.objective.result_file else "a JSON line on stdout or the metrics file"
    return f"the program did not report '{metric}' ({where}); it reported: {seen}"


def run_once(config: SweepConfig, params: dict[str, Any], folder: Path, study: str, number: int) -> dict[str, Any]:
    """The program run once outside a sweep (`tui-hpo repeat`): {"final": metrics, "seconds": s},
    as the built-in trainer's `train_once` returns them."""
    run = prepare(config, params, folder, study, number)
    reports = Reports()
    started = time.monotonic()
    outcome = process.run(run.argv, run.env, config.objective.cwd or os.getcwd(), run.files.log, run.files.metrics,
                          lambda report: reports.add(report) and None, lambda: None, config.budget.trial_timeout,
                          config.objective.grace_s)
    if outcome.ending is not None:
        raise ProgramFailed(f"{outcome.ending[1]} (see {run.files.log})")
    return {"final": finish(config, outcome, reports, run.files, started), "seconds": outcome.seconds}


class CommandTrials:
    """The program objective of a worker. Nothing is loaded when the worker starts: the
    program's framework owns the device (the engine gave the worker its CUDA_VISIBLE_DEVICES)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.config, self.store, self.study_id = worker.config, worker.store, worker.study_id
        self.metrics = self.config.objective.metrics()
        self.cwd = self.config.objective.cwd or os.getcwd()
        # A worker joining from another machine runs the program in the same folder: it must be there
        cmd_argv.check_runnable(list(self.config.objective.command or []), Path(self.cwd))

    def run(self, trial: optuna.Trial, params: dict[str, Any], deadline: float | None,
            announce: Callable[[], None]) -> list[float]:
        run = prepare(self.config, params, cmd_argv.TrialFiles.of(self.worker.artifacts, trial.number).folder,
                      self.worker.sweep.study_name, trial.number)
        reports = Reports()
        metric = self.metrics[0]
        prunes = len(self.metrics) == 1 and metric != "train_time"
        told: set[int] = set()
        started = time.monotonic()

        def on_report(report: dict[str, Any]) -> process.Ending | None:
            added = reports.add(report)
            if added is None:
                return None
            step, row = added
            self.store.set_epoch(self.study_id, trial._trial_id, 0, step, row)
            if not prunes or metric not in row or step in told:
                return None
            told.add(step)
            trial.report(row[metric], step)
            if trial.should_prune():
                return "pruned", f"pruned at step {step} ({metric}={row[metric]:.4g})"
            return None

        last_check = 0.0

        def check() -> process.Ending | None:
            nonlocal last_check
            if self.worker.stop.signalled.is_set():
                return "stopped", "stopped"
            now = time.monotonic()
            if now - last_check < CHECK_EVERY_S:
                return None
            last_check = now
            if self.worker.stop():
                return "stopped", "stopped"
            if self.store.take_command(self.study_id, "prune", trial.number):
                return "pruned", f"pruned by the user after {now - started:.0f}s"
            return None

        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        outcome = process.run(run.argv, run.env, self.cwd, run.files.log, run.files.metrics, on_report, check,
                              timeout, self.config.objective.grace_s,
                              lambda pgid: self._started(trial, run, pgid, announce))
        if outcome.code is None:  # never started: labelled all the same
            announce()
        trial.set_user_attr("exit_code", outcome.code)
        if outcome.ending is not None:
            kind, why = outcome.ending
            if kind == "stopped":
                raise Interrupted(why)
            if kind == "timeout":
                raise TrialTimeout(f"ran past budget.trial_timeout ({self.config.budget.trial_timeout:g} s)")
            raise optuna.TrialPruned(why)
        final = finish(self.config, outcome, reports, run.files, started)
        self._keep_metrics(trial, final)
        return self._values(trial, final, outcome.seconds)

    def _started(self, trial: optuna.Trial, run: Prepared, pgid: int, announce: Callable[[], None]) -> None:
        """Recorded once the program runs (its start waits for nothing of ours): its log and
        command line, and its process group, killed on recovery if its worker dies."""
        for key, value in (("pgid", pgid), ("log", str(run.files.log)), ("command", run.argv)):
            trial.set_user_attr(key, value)
        announce()

    def _keep_metrics(self, trial: optuna.Trial, final: dict[str, float]) -> None:
        kept = dict(list(final.items())[:MAX_METRIC_ATTRS])
        trial.set_user_attr("metrics", {k: round(v, 6) for k, v in kept.items()})

    def _values(self, trial: optuna.Trial, final: dict[str, float], seconds: float) -> list[float]:
        values = []
        for metric in self.metrics:
            if metric in final:
                values.append(final[metric])
            elif metric == "train_time":
                values.append(seconds)
            else:
                self._missing(trial, metric, final)
        return values

    def _missing(self, trial: optuna.Trial, metric: str, final: dict[str, float]) -> None:
        """The program never reported the objective's metric. If no trial of the study ever did,
        the name is wrong rather than this run unlucky: the sweep stops at once, saying which
        names the program did report."""
        message = missing_metric(self.config, metric, final)
        if not self.store.state_counts(self.study_id).get("COMPLETE"):
            self.store.stop_sweep(self.study_id, SweepState.STOPPED)
            self.worker.event(EventKind.SWEEP, f"stopped: trial {trial.number} {message}. Check objective.metric",
                              trial.number, level="error")
        raise MissingMetric(message)

    def after(self, trial: optuna.Trial, state: optuna.trial.TrialState, values: list[float] | None,
              interrupted: bool) -> None:
        """Nothing to keep: the program's own outputs are in the trial's folder."""
