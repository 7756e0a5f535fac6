"""Starting the engine from the TUI: a separate process in its own session, so closing the TUI or
losing the SSH connection does not stop the sweep. Its output goes to a file in the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.storage import STORAGE_ENV, Workspace


@dataclass(frozen=True)
class RunArgs:
    """What `tui-hpo run` was asked, as typed values: the CLI builds it from its options, the
    wizard and the Studies screen build it directly, and `argv()` is how it reaches the engine
    process. The workspace, study and storage travel separately (the storage never on a command
    line)."""

    preset: str | None = None
    config_file: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    data: str | None = None
    labels: str | None = None
    id_column: str | None = None
    label_column: str | None = None
    val_data: str | None = None
    test_data: str | None = None
    parallel: int | None = None
    trials_per_gpu: int | None = None
    backend: str | None = None
    resume: bool = False

    def flags(self) -> dict[str, Any]:
        """The command-line layer of the config."""
        from engine.config import flags_layer

        return flags_layer(n_trials=self.n_trials, timeout=self.timeout, data=self.data, labels=self.labels,
                           id_column=self.id_column, label_column=self.label_column, parallel=self.parallel,
                           trials_per_gpu=self.trials_per_gpu, val_data=self.val_data, test_data=self.test_data,
                           backend=self.backend)

    def argv(self) -> list[str]:
        """`tui-hpo run` options that say the same; paths made absolute, as the engine may start
        in another directory."""
        out: list[str] = []
        for option, value in (("--preset", self.preset), ("--config", _absolute(self.config_file)),
                              ("--n-trials", self.n_trials), ("--timeout", self.timeout),
                              ("--data", _absolute(self.data)), ("--labels", _absolute(self.labels)),
                              ("--id-column", self.id_column), ("--label-column", self.label_column),
                              ("--val-data", _absolute(self.val_data)), ("--test-data", _absolute(self.test_data)),
                              ("--parallel", self.parallel), ("--trials-per-gpu", self.trials_per_gpu),
                              ("--backend", self.backend)):
            if value is not None:
                out += [option, str(value)]
        return [*out, "--resume"] if self.resume else out


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


@dataclass
class EngineProcess:
    pid: int
    output: Path
    popen: subprocess.Popen

    def exited(self) -> int | None:
        return self.popen.poll()

    def error_line(self) -> str:
        """The engine's last line of output: for bad input, its one-line error."""
        try:
            lines = [ln for ln in self.output.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""


def start_engine(args: RunArgs, workspace: Workspace, study: str) -> EngineProcess:
    """`tui-hpo run ARGS --no-tui` detached from this terminal (its own session: closing the app
    or losing the SSH connection does not stop it)."""
    workdir = workspace.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop(STORAGE_ENV, None)  # no URL given: the workspace's own database
    if workspace.storage:
        env[STORAGE_ENV] = workspace.storage  # not on the command line, which every user of the machine can read
    output = workdir / f".engine-{study}.out"
    with open(output, "wb") as fh:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tui_hpo.cli", "run", *args.argv(), "--workdir", str(workdir), "--study", study,
             "--no-tui"],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            env=env)
    return EngineProcess(popen.pid, output, popen)
