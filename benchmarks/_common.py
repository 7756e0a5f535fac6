"""Helpers shared by the benchmarks: run the real CLI, read trial timings from the database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent


def run_sweep(config: Path, workdir: Path, *extra: str) -> optuna.Study:
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(config), "--workdir",
                             str(workdir), "--no-tui", *extra], capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"sweep failed:\n{result.stderr}\n{result.stdout}")
    return optuna.load_study(study_name=config.stem, storage=f"sqlite:///{workdir / 'hpo.db'}")


def span_seconds(trials: list[optuna.trial.FrozenTrial]) -> float:
    start: datetime = min(t.datetime_start for t in trials)
    end: datetime = max(t.datetime_complete for t in trials)
    return (end - start).total_seconds()
