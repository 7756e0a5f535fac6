"""How a worker process is started: its arguments as typed values, shared by the engine (which
starts its workers) and `tui-hpo worker` (which joins a sweep), with no torch to import."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from engine.storage import STORAGE_ENV


@dataclass(frozen=True)
class WorkerArgs:
    """A worker's arguments as typed values. The engine builds them for each process it starts
    (`argv()`, parsed back by `parse`), `tui-hpo worker` builds them and calls `run_worker`."""

    url: str
    study: str
    workdir: Path = Path("runs")
    device: str = "cpu"
    threads: int = 0  # torch CPU threads; 0: torch's default
    index: int = 0  # seeds this worker's sampler, so workers do not draw the same first params
    parent: int | None = None  # stop as on Ctrl-C when this process (the engine) dies

    def argv(self) -> list[str]:
        """`python -m engine.sweep.worker` arguments; the URL travels in the environment
        (${STORAGE_ENV}), never on a command line other users can read."""
        out = ["--study", self.study, "--workdir", str(self.workdir), "--device", self.device,
               "--threads", str(self.threads), "--index", str(self.index)]
        return [*out, "--parent", str(self.parent)] if self.parent is not None else out

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> WorkerArgs:
        parser = argparse.ArgumentParser(prog="python -m engine.sweep.worker", description=__doc__.splitlines()[0])
        parser.add_argument("--study", required=True)
        parser.add_argument("--workdir", type=Path, default=cls.workdir)
        parser.add_argument("--device", default=cls.device)
        parser.add_argument("--threads", type=int, default=cls.threads)
        parser.add_argument("--index", type=int, default=cls.index)
        parser.add_argument("--parent", type=int, metavar="PID")
        args = parser.parse_args(argv)
        url = os.environ.get(STORAGE_ENV)
        if not url:
            parser.error(f"${STORAGE_ENV} must hold the storage URL")
        return cls(url=url, study=args.study, workdir=args.workdir, device=args.device, threads=args.threads,
                   index=args.index, parent=args.parent)


