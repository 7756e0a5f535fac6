"""Tune's experiment state, kept whole through a kill. Tune rewrites its state files in place
(`experiment_state-*.json`, `search_gen_state-*.json`, about once a second). An engine killed
mid-write leaves one empty or cut short, and `Tuner.restore` then starts the experiment afresh:
its running trials lose their checkpoints and run again from their first epoch.

So, while Tune runs, the keeper copies each state file that reads whole to `<name>.whole`
(atomically), and before a restore `repair` puts that copy back in place of a torn file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from engine.artifacts import write_atomic

PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json")
SUFFIX = ".whole"
CHECK_S = 0.5  # how often the keeper looks: Tune calls it at every step of its loop


def _whole(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:  # empty, or cut short mid-write
        return False
    return True


class StateKeeper(Callback):
    """Tune's callback that keeps the last whole copy of each of the experiment's state files."""

    def __init__(self, experiment: Path) -> None:
        self.experiment = experiment
        self._kept: dict[Path, tuple[int, int]] = {}  # file -> (mtime, size) when last copied
        self._looked = 0.0

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._looked >= CHECK_S:
            self._looked = time.monotonic()
            self.keep()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.keep()

    def keep(self) -> None:
        """Copy each state file that changed since it was last copied, if it reads whole (one
        Tune is writing at this moment does not: it is copied at the next look)."""
        for pattern in PATTERNS:
            for path in self.experiment.glob(pattern):
                try:
                    stat = path.stat()
                    if self._kept.get(path) == (stat.st_mtime_ns, stat.st_size):
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                if _whole(data):
                    write_atomic(path.with_name(path.name + SUFFIX), data)
                    self._kept[path] = (stat.st_mtime_ns, stat.st_size)

    def __getstate__(self) -> dict[str, Any]:  # pickled into the experiment, as Tune does its callbacks
        return {"experiment": self.experiment}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["experiment"])  # type: ignore[misc]


def repair(experiment: Path) -> list[str]:
    """Put the last whole copy back in place of each torn state file; the names repaired."""
    repaired = []
    for pattern in PATTERNS:
        for path in experiment.glob(pattern):
            copy = path.with_name(path.name + SUFFIX)
            if copy.is_file() and not _whole(path.read_bytes()):
                write_atomic(path, copy.read_bytes())
                repaired.append(path.name)
    return repaired
