"""The fixed costs around a sweep's trials, phase by phase: from the command to the study, from
the worker's spawn to its first trial, and from the last trial to the command's exit.

Side by side: a cold start (an empty user cache: the engine imports timm and torch to check the
models, as every start did before the check was cached) and a warm one (the same command again).
Each run is the tiny test sweep (timm `test_resnet`, digits, 3 trials, one worker), timed from the
events and trials the engine and worker write. Medians of --repeats pairs. Prints
`warm_overhead_s=` (all fixed costs of a warm run) and `ratio=` (warm over cold) last.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import ROOT

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
PHASES = ("to_study", "worker_start", "after_last_trial")


def _epoch(text: str) -> float:
    """Optuna's naive UTC datetimes in SQLite as seconds since the epoch."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def one_run(workdir: Path, cache: Path) -> dict[str, float]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    started = time.time()
    subprocess.run([sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(TINY), "--workdir", str(workdir),
                    "--no-tui", "--n-trials", "3"], cwd=ROOT, env=env, check=True, capture_output=True)
    ended = time.time()
    with sqlite3.connect(workdir / "hpo.db") as conn:
        study_at = conn.execute("SELECT MIN(ts) FROM hpo_event").fetchone()[0]
        first, last = conn.execute("SELECT MIN(datetime_start), MAX(datetime_complete) FROM trials").fetchone()
    # The worker registers itself only after its imports: its spawn is the engine's log line.
    log = (workdir / "tiny" / "engine.log").read_text().splitlines()
    line = next(x for x in log if "engine INFO worker 0: pid" in x)
    spawn = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return {"to_study": study_at - started, "worker_start": _epoch(first) - spawn,
            "after_last_trial": ended - _epoch(last), "wall": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            cold.append(one_run(Path(tmp) / "cold", cache))
            warm.append(one_run(Path(tmp) / "warm", cache))

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"{'phase':<22}{'cold':>8}{'warm':>8}   (seconds, medians of {args.repeats})")
    for key in (*PHASES, "wall"):
        print(f"{key:<22}{median(cold, key):8.2f}{median(warm, key):8.2f}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import engine.sweep.worker"], cwd=ROOT, check=True)
    print(f"{'(worker imports alone)':<22}{time.perf_counter() - start:8.2f}")
    overhead = {name: sum(median(runs, k) for k in PHASES) for name, runs in (("cold", cold), ("warm", warm))}
    print(f"warm_overhead_s={overhead['warm']:.2f}")
    print(f"ratio={overhead['warm'] / overhead['cold']:.3f}")


if __name__ == "__main__":
    main()
