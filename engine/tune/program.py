"""A Ray Tune trial of a program (`objective.command`): the user's own training script, run as
the Optuna tier runs it (engine.command: its parameters in every form, its reports read from
stdout or the metrics file, its process group ended whole), with each report passed to Tune, so
ASHA, HyperBand and the median rule stop the trials behind as they report.

A program keeps its own state, so Tune gets no checkpoint: a trial restored after a killed
engine runs again from its start, and PBT (which clones a trial's model) is refused for programs
(engine.config.schema). How the trial ended travels in its last report (`final`, or `failed` with
the reason), which the driver's recorder writes into the study (engine.tune.record), as it writes
the built-in trainer's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.command import argv as cmd_argv
from engine.command import process
from engine.command.metrics import Reports
from engine.config import SweepConfig
from engine.sweep.command_trials import MAX_METRIC_ATTRS, ProgramFailed, finish, missing_metric, prepare
from engine.tune.files import number_file


def run_program(params: dict[str, Any], sweep: dict[str, Any], study: str, artifacts: str, device: str) -> None:
    """Run the trial's program once, passing its reports to Tune (`_Relay`), then a last report:
    `final` with the trial's value as `objective`, or `failed` with why."""
    from ray import tune

    config = SweepConfig.model_validate(sweep)  # objective.cwd: the driver's folder, filled by the runner
    numbered = number_file(Path(artifacts), tune.get_context().get_trial_id())
    if not numbered.is_file():
        raise RuntimeError(f"{artifacts} is not readable on this Ray node: a program's trials write their files "
                           "in the study's folder, which must be on a file system the nodes share")
    number = int(numbered.read_text())
    run = prepare(config, params, cmd_argv.TrialFiles.of(Path(artifacts), number).folder, study, number)
    metric = config.objective.metrics()[0]
    relay = _Relay(metric, getattr(config.scheduler, "max_t", None),
                   {"device": device, "attrs": {"log": str(run.files.log), "command": run.argv}})
    started = time.monotonic()
    outcome = process.run(run.argv, run.env, config.objective.cwd or ".", run.files.log, run.files.metrics,
                          relay.on_report, lambda: ("stopped", "stopped by Tune") if _stopping() else None,
                          config.budget.trial_timeout, config.objective.grace_s)
    if relay.stopped or (outcome.ending is not None and outcome.ending[0] == "stopped"):
        # As Tune's own report ends a stopped trial's thread (its runner then reports nothing more,
        # and the Ray worker takes the next trial): returning instead would leave a last report
        # nobody reads, and the worker stuck.
        raise SystemExit(0)
    attrs: dict[str, Any] = {"exit_code": outcome.code}
    if outcome.ending is not None:  # the trial's time ran out
        relay.end({"failed": outcome.ending[1]}, attrs)
        return
    try:
        final = finish(config, outcome, relay.reports, run.files, started)
    except ProgramFailed as exc:
        relay.end({"failed": str(exc)}, attrs)
        return
    attrs["metrics"] = {k: round(v, 6) for k, v in list(final.items())[:MAX_METRIC_ATTRS]}
    value = final.get(metric, outcome.seconds if metric == "train_time" else None)
    if value is None:
        relay.end({"failed": missing_metric(config, metric, final)}, attrs)
        return
    relay.end({"objective": value, "final": True}, attrs)


class _Relay:
    """A program's reports on their way to Tune. One Tune report per step of the program that
    carries the objective's metric (Tune's iterations are what the scheduler's grace period, rungs
    and max_t count); the other metrics of each step go along in `rows`, so the study records every
    metric of every step. The report that would be the scheduler's max_t-th is held until the
    program ends and goes with its result: the scheduler stops a trial as soon as it hears its
    max_t-th report, which would cut off the exit code, results file and value of a program that
    runs its course."""

    def __init__(self, metric: str, max_t: int | None, first: dict[str, Any]) -> None:
        self.metric, self.max_t = metric, max_t
        self.reports = Reports()
        self.rows: dict[str, dict[str, float]] = {}  # step -> its metrics, changed since the last report
        self.told: set[int] = set()
        self.sent = 0
        self.held: dict[str, Any] | None = None
        self.first = first  # said with the first report: the device, the program's log and command line
        self.stopped = False

    def on_report(self, report: dict[str, Any]) -> process.Ending | None:
        added = self.reports.add(report)
        if added is None:
            return None
        step, row = added
        self.rows[str(step)] = row
        if self.metric not in row or step in self.told:
            return None
        self.told.add(step)
        if self.held is not None:  # more steps than max_t: the scheduler ends the trial at the held one
            return self._send(self.held)
        result = {self.metric: row[self.metric], "epoch": step}
        if self.max_t is not None and self.sent + 1 >= self.max_t:
            self.held = result
            return None
        return self._send(result)

    def _send(self, result: dict[str, Any]) -> process.Ending | None:
        from ray import tune

        try:
            tune.report({**result, "rows": self.rows, **self.first})
        except SystemExit:  # Tune stops the trial (its scheduler, the user, the sweep): the program goes first
            self.stopped = True
            return "stopped", "stopped by Tune"
        self.rows, self.first = {}, {}
        self.sent += 1
        return None

    def end(self, result: dict[str, Any], attrs: dict[str, Any]) -> None:
        """The trial's last report: how it ended (`final` with its `objective`, or `failed` with
        why), with the held report if there is one."""
        from ray import tune

        last = self.held or {"epoch": max(self.reports.steps, default=-1)}  # -1: it reported nothing
        first_attrs = self.first.get("attrs", {})
        tune.report({**last, **result, "rows": self.rows, **self.first, "attrs": {**first_attrs, **attrs}})


def _stopping() -> bool:
    """Whether Tune has asked this trial to end while its program runs between two reports. Read
    from Ray's session (not a public API: without it, the program is killed with its Ray worker)."""
    try:
        from ray.train._internal.session import get_session

        session = get_session()
        return bool(session is not None and session.stop_event.is_set())
    except (ImportError, AttributeError):
        return False
