"""Result quality at a fixed trial budget: tui-hpo's default search against the baselines a user
would otherwise run, on three datasets made on the spot from images installed packages ship.

Datasets: the embedded digits (1,797 8x8 glyphs, 10 classes); a photo ImageFolder tree (crops of
the photos scikit-learn and matplotlib ship, 3 classes, mixed sizes); the same kind of photos in
the CSV layout with columns of its own (`filename,category`). `engine.datasets.samples` makes them.

Searches, each the same number of trials through the real CLI, on the quick preset's space:
- random: RandomSampler, no pruning (what a loop over random configs does);
- grid: the seeds' Basic tier, model x learning rate on a grid, no pruning;
- tui-hpo: the quick preset as it ships (TPE with median pruning, training length in steps).
Per dataset it prints each search's best validation F1 at the budget and the wall time until a
trial first reached the target (0.95 x the best any search found there), and one long plain
training run of a strong config (`tui-hpo train`, 4x the steps), and how soon each search matched
random search's best at its whole budget (`speedup_to_random_best=`: a stricter figure where one
trial already clears 0.95 x best). Last lines:
`speedup_vs_random=` (random's time to target over tui-hpo's, median over datasets; goal >= 2)
and `gap_to_long_run=` (the long run's F1 minus tui-hpo's best, worst dataset; goal <= 0.01).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from _common import ROOT, run_sweep

from engine.config.presets import PRESET_DIR
from engine.datasets.samples import make_photos

TARGET_SHARE = 0.95
# The datasets by their --only key: (name printed, how to make it under a folder; None: the digits).
DATASETS: dict[str, tuple[str, Callable[[Path, int], Path] | None]] = {
    "digits": ("digits", None),
    "folder": ("photos (ImageFolder)", lambda root, per_class: make_photos(root, per_class=per_class, seed=1)),
    "csv": ("photos (CSV)", lambda root, per_class: make_photos(root, per_class=per_class, layout="csv", seed=2)),
}


def quick_preset() -> dict[str, Any]:
    """The quick preset as a plain dict, without its CUDA block (the searches compare on one
    space: the benchmark runs where the comparison is, whatever the platform)."""
    preset = yaml.safe_load((PRESET_DIR / "quick.yaml").read_text())
    for key in ("per_platform", "name", "description"):  # each search's study is named after its file
        preset.pop(key, None)
    return preset


def search_configs(budget: int, seed: int) -> dict[str, dict[str, Any]]:
    """The three searches, as configs with the same budget and data-dependent training length;
    `seed` seeds each sampler (random's draws, TPE's, the grid's order)."""
    base = quick_preset()
    base["budget"] = {"n_trials": budget, "max_consecutive_failures": budget}
    base["checkpoints"] = {"keep": 0}
    base["sampler"] = {**base["sampler"], "seed": seed}
    random = {**base, "sampler": {"name": "random", "seed": seed}, "pruner": {"name": "none"}}
    models = base["search_space"]["model"]["choices"]
    lr = base["search_space"]["lr"]
    n_lr = max(1, math.ceil(budget / len(models)))
    lrs = [lr["low"] * (lr["high"] / lr["low"]) ** ((i + 0.5) / n_lr) for i in range(n_lr)]  # log-spaced
    grid = {**base, "sampler": {"name": "grid", "seed": seed}, "pruner": {"name": "none"},
            "search_space": {"model": {"choices": models}, "lr": {"choices": [float(f"{v:.3g}") for v in lrs]}}}
    return {"random": random, "grid": grid, "tui-hpo": base}


def time_to_target(study: optuna.Study, target: float) -> float:
    """Seconds from the first trial's start until a trial first finished at or above `target`."""
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    if not trials:
        return math.inf
    start = min(t.datetime_start for t in trials)
    hits = [(t.datetime_complete - start).total_seconds()
            for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
            and t.value >= target - 1e-9]
    return min(hits) if hits else math.inf


def mean_time(studies: list[optuna.Study], target: float) -> float:
    """Mean seconds to `target` over the seeds' runs; a run that never got there counts as twice
    its whole budget (a lower bound on what it would have taken)."""
    times = [time_to_target(st, target) for st in studies]
    return statistics.mean(t if math.isfinite(t) else 2 * wall_seconds(st)
                           for t, st in zip(times, studies, strict=True))


def wall_seconds(study: optuna.Study) -> float:
    """From the first trial's start to the last trial's end: the search's whole budget."""
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def long_run(data: str | None, workdir: Path, steps: int) -> float:
    """Validation F1 of one long plain training run of a strong config (test_resnet, AdamW,
    cosine, the data's own image size and augmentation) through `tui-hpo train`."""
    config = workdir / "long.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"model": "test_resnet", "lr": 2.0e-3, "weight_decay": 0.05, "epochs": 1, "min_steps": steps,
                  "batch_size": 64, "warmup_ratio": 0.05, "scheduler": "cosine"},
        "resources": {"parallel": 1, "batch_multiplier": 1.0}}))
    args = [sys.executable, "-m", "tui_hpo.cli", "train", "--config", str(config), "--json"]
    if data:
        args += ["--data", data]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=True)
    return float(json.loads(out.stdout)["final"]["val_f1"])


def datasets(root: Path, per_class: int, only: str | None) -> dict[str, str | None]:
    """The datasets to run (all, or the one `only` names): printed name -> --data path (None: the
    digits). Only those are written."""
    return {name: str(make(root / key, per_class)) if make else None
            for key, (name, make) in DATASETS.items() if only in (None, key)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=9, help="trials per search (default 9)")
    parser.add_argument("--per-class", type=int, default=90, help="photos per class (default 90: 270 photos)")
    parser.add_argument("--only", choices=DATASETS, help="one dataset")
    parser.add_argument("--seeds", type=int, default=1,
                        help="repeat each search with this many sampler seeds; times are averaged (default 1)")
    args = parser.parse_args()
    speedups: list[float] = []
    matches: list[float] = []
    gaps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hpo-quality-") as tmp:
        work = Path(tmp)
        for name, data in datasets(work / "data", args.per_class, args.only).items():
            runs: dict[str, list[optuna.Study]] = {}
            for seed in range(args.seeds):
                for search, config in search_configs(args.budget, seed).items():
                    run_dir = work / f"{''.join(c for c in name if c.isalnum())}-{search}-{seed}"
                    run_dir.mkdir(parents=True)
                    if data:
                        config = {**config, "data": {"path": data}}
                    path = run_dir / f"{search.replace('-', '_')}.yaml"
                    path.write_text(yaml.safe_dump(config))
                    runs.setdefault(search, []).append(run_sweep(path, run_dir / "runs"))
            bests = {s: [max((t.value for t in st.trials if t.value is not None), default=0.0) for st in studies]
                     for s, studies in runs.items()}
            best = {s: statistics.mean(values) for s, values in bests.items()}
            target = TARGET_SHARE * max(max(values) for values in bests.values())
            # A search that never reached the target is charged its whole budget's time, twice:
            # a lower bound on what it would have taken.
            reach = {s: mean_time(studies, target) for s, studies in runs.items()}
            # A stricter figure where the first trial already clears 0.95 x best: how soon each
            # search matched what random search found with its whole budget (its mean best).
            matched = {s: mean_time(studies, best["random"]) for s, studies in runs.items()}
            steps = 4 * int(quick_preset()["train"]["min_steps"])
            long_f1 = long_run(data, work, steps)
            print(f"\n{name}: target F1 {target:.3f} (0.95 x the best found); means over {args.seeds} seed(s)")
            print(f"  {'search':8} {'best F1':>8} {'to target':>10} {'to random best':>15} {'whole budget':>13}")
            for search, studies in runs.items():
                whole = statistics.mean(wall_seconds(st) for st in studies)
                print(f"  {search:8} {best[search]:8.3f} {reach[search]:8.0f} s {matched[search]:13.0f} s "
                      f"{whole:11.0f} s   (best per seed: {', '.join(f'{v:.3f}' for v in bests[search])})")
            print(f"  long run ({steps} steps of test_resnet): F1 {long_f1:.3f}")
            speedups.append(reach["random"] / reach["tui-hpo"])
            matches.append(matched["random"] / matched["tui-hpo"])
            gaps.append(long_f1 - best["tui-hpo"])
            print(f"  speedup vs random: to target {speedups[-1]:.2f}, to random's best {matches[-1]:.2f}; "
                  f"gap to long run {gaps[-1]:+.3f}", flush=True)
    print(f"\nspeedup_to_random_best={statistics.median(matches):.2f}")
    print(f"speedup_vs_random={statistics.median(speedups):.2f}")
    print(f"gap_to_long_run={max(gaps):.3f}")


if __name__ == "__main__":
    main()
