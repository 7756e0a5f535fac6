"""What is news about a sweep (it finished or stopped, trials keep failing, a new best), and the
config's `notify: {command: ...}` hook that is run on it.

`Watch` turns successive snapshots of a sweep (its state, trial counts, best value) into notices,
each once: the engine feeds it every tick and runs the hook; the TUI feeds it what it polls and
rings the terminal (tui_hpo.notify). Counts are all either has, so both say the same things.

The hook runs through the shell (so `$TUI_HPO_MESSAGE` expands), detached, with the notice in
environment variables; it is never waited on while the sweep runs, and one that fails or hangs
is reported, never raised: a notification must not fail a sweep.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.storage.states import ACTIVE, SweepState, finished_count

FAILURES_IN_A_ROW = 3  # failures with no trial finished between them that make a notice
HOOK_TIMEOUT_S = 30.0  # a hook still running after this long is killed and counted as failed
LIVE = (*ACTIVE, SweepState.STOPPING)  # states a sweep can finish or stop from


class Event:
    """The notices' names, as `TUI_HPO_EVENT` carries them."""

    FINISHED = "finished"  # the budget is spent
    STOPPED = "stopped"  # by the user, a time budget, or consecutive failures
    FAILURES = "failures"  # FAILURES_IN_A_ROW trials failed in a row
    BEST = "best"  # a completed trial beat the best value so far


@dataclass(frozen=True)
class Snapshot:
    """What a reader knows of a sweep at one moment."""

    state: str  # a SweepState
    counts: dict[str, int]  # trials by Optuna state
    best: float | None  # the best first-objective value; None with several objectives
    n_trials: int | None = None


@dataclass(frozen=True)
class Notice:
    event: str
    study: str
    message: str
    best: float | None
    done: int
    n_trials: int | None
    failed: int

    def environ(self) -> dict[str, str]:
        """The hook's environment variables. TUI_HPO_JSON is a chat webhook's body (Slack,
        Mattermost: `{"text": ...}`), quoted correctly whatever the message holds."""
        return {"TUI_HPO_EVENT": self.event, "TUI_HPO_STUDY": self.study, "TUI_HPO_MESSAGE": self.message,
                "TUI_HPO_BEST": "" if self.best is None else f"{self.best:.6g}", "TUI_HPO_DONE": str(self.done),
                "TUI_HPO_N_TRIALS": "" if self.n_trials is None else str(self.n_trials),
                "TUI_HPO_FAILED": str(self.failed), "TUI_HPO_JSON": json.dumps({"text": self.message})}


@dataclass
class Watch:
    """One sweep's notices. The first snapshot is the baseline: what was already true when the
    watch began (a sweep attached to after it finished) is never news."""

    study: str
    maximize: bool = True
    _last: Snapshot | None = None
    _best: float | None = None
    _fails_at_last_done: int = 0
    _told_failures: bool = False

    def see(self, now: Snapshot) -> list[Notice]:
        last, self._last = self._last, now
        fails, done = now.counts.get("FAIL", 0), finished_count(now.counts)
        if last is None:
            self._best, self._fails_at_last_done = now.best, fails
            return []
        out: list[Notice] = []
        if now.best is not None and (self._best is None or (now.best > self._best if self.maximize
                                                             else now.best < self._best)):
            self._best = now.best
            out.append(self._notice(Event.BEST, now, f"new best {now.best:.4g} in sweep '{self.study}' "
                                                      f"({self._progress(now)})"))
        if done > finished_count(last.counts):
            # Failures in the same interval as a finished trial may have come before it: not counted,
            # so a notice is never a false alarm.
            self._fails_at_last_done, self._told_failures = fails, False
        streak = fails - self._fails_at_last_done
        if streak >= FAILURES_IN_A_ROW and not self._told_failures:
            self._told_failures = True
            out.append(self._notice(Event.FAILURES, now, f"{streak} trials in a row failed in sweep '{self.study}' "
                                                          f"({self._progress(now)})"))
        if last.state in LIVE and now.state in (SweepState.FINISHED, SweepState.STOPPED):
            event = Event.FINISHED if now.state == SweepState.FINISHED else Event.STOPPED
            best = f", best {self._best:.4g}" if self._best is not None else ""
            out.append(self._notice(event, now, f"sweep '{self.study}' {now.state}: {self._progress(now)}{best}"))
        return out

    @staticmethod
    def _progress(now: Snapshot) -> str:
        total = f"/{now.n_trials}" if now.n_trials else ""
        return f"{finished_count(now.counts)}{total} trials done, {now.counts.get('FAIL', 0)} failed"

    def _notice(self, event: str, now: Snapshot, message: str) -> Notice:
        return Notice(event=event, study=self.study, message=message, best=self._best,
                      done=finished_count(now.counts), n_trials=now.n_trials, failed=now.counts.get("FAIL", 0))


@dataclass
class Hook:
    """The config's `notify.command`, started for each notice and never waited on while the
    sweep runs. `poll` reports the runs that failed (non-zero exit, not startable, killed after
    HOOK_TIMEOUT_S) as one line each."""

    command: str
    cwd: Path | None = None
    log: Path | None = None  # where the command's own output goes (the engine log); None: nowhere
    timeout_s: float = HOOK_TIMEOUT_S
    _running: list[tuple[subprocess.Popen, Notice, float]] = field(default_factory=list)
    _failed: list[str] = field(default_factory=list)

    def run(self, notice: Notice) -> None:
        try:
            # Its own session: a Ctrl+C meant for the sweep does not cut a notification short, and
            # a hung one is killed with everything it started.
            with open(self.log, "ab") if self.log else contextlib.nullcontext(subprocess.DEVNULL) as out:
                proc = subprocess.Popen(self.command, shell=True, cwd=self.cwd, env={**os.environ, **notice.environ()},
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        except OSError as exc:
            self._failed.append(f"notify.command could not start for '{notice.event}': {exc}")
            return
        self._running.append((proc, notice, time.monotonic()))

    def poll(self) -> list[str]:
        return self._reap(time.monotonic())

    def wait(self, timeout_s: float) -> list[str]:
        """At the sweep's end: give the last runs up to `timeout_s` (the final notice must not be
        lost when the engine exits), then report as `poll` does, killing those still running."""
        deadline = time.monotonic() + timeout_s
        for proc, _notice, _started in self._running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return self._reap(math.inf)  # every run still going is overdue now

    def _reap(self, now: float) -> list[str]:
        still = []
        for proc, notice, started in self._running:
            code = proc.poll()
            if code is None and now - started > self.timeout_s:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self._failed.append(f"notify.command for '{notice.event}' did not end in time and was killed")
            elif code is None:
                still.append((proc, notice, started))
            elif code != 0:
                self._failed.append(f"notify.command for '{notice.event}' failed with exit code {code}")
        self._running = still
        failed, self._failed = self._failed, []
        return failed
