"""The quick preset on a GPU, end to end: default settings beside compile and packing forced off.

For each side: `tui-hpo run --preset quick --n-trials N --no-tui` in a fresh workspace, timed
from the command to its exit. From the database: trials per minute, GPU busy (the engine's NVML
samples over the sweep: `summary`'s figure) and the first-epoch ratio (each trial's first epoch
over its median later epoch, median over trials: the warm-up tax of a new model and shape).
Goals on an H200-class GPU (issue 9): quick 8 within 30 s, GPU busy >= 60%, ratio under 2.

CUDA only: without a GPU it says so and exits 0 (`--allow-cpu` runs it anyway, to try the script).
Prints `trials_per_min=`, `gpu_busy=` and `first_epoch_ratio=` of the default side last.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT

FORCED_OFF = {"TUI_HPO__RESOURCES__COMPILE": "false", "TUI_HPO__RESOURCES__TRIALS_PER_GPU": "1"}


def first_epoch_ratio(db: Path) -> float | None:
    """Median over trials of (first epoch seconds / median of its later epochs)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT trial_id, epoch, seconds FROM hpo_epoch WHERE fold = 0 ORDER BY trial_id, epoch")
        by_trial: dict[int, list[float]] = {}
        for trial_id, _epoch, seconds in rows:
            by_trial.setdefault(trial_id, []).append(seconds)
    ratios = [s[0] / statistics.median(s[1:]) for s in by_trial.values() if len(s) > 1 and statistics.median(s[1:]) > 0]
    return statistics.median(ratios) if ratios else None


def one_side(n_trials: int, extra_env: dict[str, str], label: str) -> dict[str, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **extra_env, "COLUMNS": "120"}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "run", "--preset", "quick", "--n-trials",
                               str(n_trials), "--no-tui", "--workdir", tmp], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{label}: the sweep failed:\n{done.stderr}\n{done.stdout[-3000:]}")
        report = json.loads((Path(tmp) / "quick" / "report.json").read_text())
        ratio = first_epoch_ratio(Path(tmp) / "hpo.db")
        events = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "summary", "--workdir", tmp], cwd=ROOT,
                                capture_output=True, text=True).stdout
    finished = report["counts"]["COMPLETE"] + report["counts"]["PRUNED"]
    gpu = report.get("gpu") or {}
    out = {"wall_s": wall, "trials_per_min": finished / wall * 60, "gpu_busy": gpu.get("busy_percent"),
           "first_epoch_ratio": ratio, "best": (report.get("best") or {}).get("value")}
    print(f"--- {label}: {finished} trials in {wall:.1f} s")
    print(events.strip())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU too (figures mean little)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from engine.system.platform import probe_for_sweep

    info = probe_for_sweep()
    if (info is None or info.platform != "cuda") and not args.allow_cpu:
        print("gpu_sweep: no CUDA GPU here (NVML found none, or torch is built without CUDA): nothing to measure")
        return
    forced = one_side(args.n_trials, FORCED_OFF, "compile off, one trial per GPU")
    default = one_side(args.n_trials, {}, "default settings")

    def shown(value: float | None, fmt: str = ".2f") -> str:
        return "n/a" if value is None else format(value, fmt)

    print(f"{'':<24}{'forced off':>12}{'default':>12}")
    for key in ("wall_s", "trials_per_min", "gpu_busy", "first_epoch_ratio", "best"):
        print(f"{key:<24}{shown(forced[key]):>12}{shown(default[key]):>12}")
    print(f"trials_per_min={shown(default['trials_per_min'])}")
    print(f"gpu_busy={shown(default['gpu_busy'], '.1f')}")
    print(f"first_epoch_ratio={shown(default['first_epoch_ratio'])}")


if __name__ == "__main__":
    main()
