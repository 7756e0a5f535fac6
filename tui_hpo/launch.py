"""Starting the engine from the TUI: a separate process in its own session, so closing the TUI or
losing the SSH connection does not stop the sweep. Its output goes to a file in the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.storage import STORAGE_ENV


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


def start_engine(args: list[str], workdir: Path, study: str, storage: str | None = None) -> EngineProcess:
    """`tui-hpo run ARGS --no-tui` detached from this terminal, in this working directory (so
    relative paths in ARGS mean what the user meant)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop(STORAGE_ENV, None)  # no URL given: the workspace's own database
    if storage and "--storage" not in args:
        env[STORAGE_ENV] = storage  # not on the command line, which every user of the machine can read
    output = workdir / f".engine-{study}.out"
    with open(output, "wb") as fh:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tui_hpo.cli", "run", *args, "--workdir", str(workdir), "--study", study,
             "--no-tui"],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            env=env)
    return EngineProcess(popen.pid, output, popen)
