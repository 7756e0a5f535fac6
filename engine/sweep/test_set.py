"""`data.test` once the sweep has ended: the best trial's kept model evaluated on the test set, in a
child process (`engine.training.evaluate`: the engine never imports torch), and recorded in the
study (`tui_hpo` attribute, key `test`: what `summary` and report.json show) and as an event. The
test set chooses nothing: by then the best trial is decided on the validation set alone."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna

from engine.config import SweepConfig
from engine.insights.results import best_trials
from engine.storage import STORAGE_ENV, STUDY_ATTR, Store, load_study, study_facts
from engine.storage.states import EventKind
from engine.sweep import checkpoints

log = logging.getLogger("tui_hpo.engine")
TIMEOUT_S = 3600.0


def evaluate_best(config: SweepConfig, url: str, study_name: str, study_id: int, folder: Path,
                  workdir: Path) -> dict[str, Any] | None:
    """The best trial's test figures ({"trial", "images", "accuracy", "f1"}, or {"trial", "note"}
    saying why there are none), recorded; None without `data.test` or a best trial."""
    if config.data.test is None:
        return None
    study = load_study(url, study_name)
    best = best_trials(study)
    if not best:
        return None
    # Of a Pareto front, the trial best by the first objective: the one whose model is kept first
    # (checkpoints rank by it) and is best_model.safetensors.
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    number = min(best, key=lambda t: (-t.values[0] if maximize else t.values[0], t.number)).number
    path = checkpoints.path_of(folder, number)
    result: dict[str, Any] = {"trial": number}
    if not path.exists():
        result["note"] = "its model was not kept (checkpoints.keep: 0, or not saved): no test figures"
    else:
        cmd = [sys.executable, "-m", "engine.training.evaluate", "--study", study_name, "--checkpoint", str(path),
               "--workdir", str(workdir)]
        try:
            done = subprocess.run(cmd, env={**os.environ, STORAGE_ENV: url}, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:
                raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
            result |= json.loads(lines[-1])
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log.warning("test set: %s", exc)
            result["note"] = f"the test set could not be evaluated: {str(exc)[:300]}"
    study.set_user_attr(STUDY_ATTR, {**study_facts(study), "test": result})
    shown = (f"accuracy {result['accuracy']:.4f}, macro-F1 {result['f1']:.4f} on {result['images']} images"
             if "note" not in result else result["note"])
    Store(url).add_event(study_id, EventKind.SWEEP, f"test set (data.test), best trial {number}: {shown}",
                         level="warning" if "note" in result else "info")
    return result
