"""The three tiers at one budget, side by side: Basic (random search, no pruning), Advanced (TPE
with median pruning: the Optuna tier) and Expert (Ray Tune: ASHA with TPE, and population-based
training), each through the real CLI with two trials at a time, each study in its own workdir.

All four search the same space (learning rate and weight decay, both on a log scale) with the same
trials, epochs, model (test_resnet at 16 px, one thread a trial) and data (the embedded digits,
or a stratified subset). The sampler is seeded; PBT starts from random draws, which it then
clones and mutates. Per tier it prints the command's wall time (start-up, Ray's included), the
first trial's start to the last trial's end, the best validation F1, the time to a target F1
(0.95 x the best any tier found: the first trial to finish at or above it, counted from the first
trial's start) and the trials pruned or stopped early (for PBT, its clone-and-mutate steps).
Last line: `expert_vs_advanced=` (Advanced's time to the target over Expert ASHA's; a tier that
never reached it is charged twice its whole budget, a lower bound, as hpo_quality.py does).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from _common import run_sweep
from hpo_quality import TARGET_SHARE, mean_time, time_to_target, wall_seconds

SPACE = {"lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
         "weight_decay": {"low": 1.0e-4, "high": 0.3, "log": True}}
IMAGE_SIZE = 16  # the digits are 8x8: quick trials on a small CPU machine
PARALLEL = 2


def tier_configs(trials: int, epochs: int, subset: int | None, seed: int) -> dict[str, dict[str, Any]]:
    """Each tier's sweep config: one base, and what the tier changes. The schedulers and the
    pruner take the project's defaults (ASHA: grace 1 epoch, reduction factor 3; PBT: every 2
    epochs, every float parameter mutated in its range; median: 4 start-up trials)."""
    base: dict[str, Any] = {
        "train": {"model": "test_resnet", "epochs": epochs, "image_size": IMAGE_SIZE},
        "search_space": SPACE,
        "budget": {"n_trials": trials, "max_consecutive_failures": trials},
        "checkpoints": {"keep": 0},
        "resources": {"parallel": PARALLEL, "threads_per_worker": 1, "batch_multiplier": 1.0},
    }
    if subset:
        base["data"] = {"subset": subset}
    ray = {"backend": "ray", "resources": {**base["resources"], "cpus_per_trial": 1}}
    return {
        "basic": {**base, "sampler": {"name": "random", "seed": seed}, "pruner": {"name": "none"}},
        "advanced": {**base, "sampler": {"name": "tpe", "seed": seed}, "pruner": {"name": "median"}},
        "expert-asha": {**base, **ray, "sampler": {"name": "tpe", "seed": seed}, "scheduler": {"name": "asha"}},
        "expert-pbt": {**base, **ray, "sampler": {"name": "random", "seed": seed}, "scheduler": {"name": "pbt"}},
    }


def early_stops(study: optuna.Study) -> str:
    """Trials pruned or stopped by the scheduler; for PBT, its exploit steps (a trial that took
    over another's weights and mutated values), which stop nothing."""
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    clones = sum(len(t.user_attrs.get("pbt", [])) for t in study.trials)
    return f"{pruned} pruned" + (f", {clones} PBT clones" if clones else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per tier (default 16)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (default 6)")
    parser.add_argument("--subset", type=int, help="train and validate on this many digits (default: all 1,797)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--only", help="run the tiers whose names contain this (e.g. expert)")
    args = parser.parse_args()
    tiers = {tier: config for tier, config in tier_configs(args.trials, args.epochs, args.subset, args.seed).items()
             if not args.only or args.only in tier}
    if not tiers:
        parser.error(f"--only {args.only}: no tier's name contains it ({', '.join(tier_configs(1, 1, None, 0))})")
    studies: dict[str, optuna.Study] = {}
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tiers-") as tmp:
        for tier, config in tiers.items():
            run_dir = Path(tmp) / tier
            run_dir.mkdir()
            path = run_dir / f"{tier.replace('-', '_')}.yaml"  # the study is named after the file
            path.write_text(yaml.safe_dump(config))
            started = time.perf_counter()
            studies[tier] = run_sweep(path, run_dir / "runs")
            walls[tier] = time.perf_counter() - started
            print(f"{tier}: done in {walls[tier]:.0f} s", flush=True)
    bests = {tier: max((t.value for t in st.trials if t.value is not None), default=0.0)
             for tier, st in studies.items()}
    target = TARGET_SHARE * max(bests.values())
    reach = {tier: time_to_target(st, target) for tier, st in studies.items()}
    print(f"\n{args.trials} trials x {args.epochs} epochs, {PARALLEL} at a time, digits"
          f"{f' (subset {args.subset})' if args.subset else ''}; target F1 {target:.3f} (0.95 x the best found)")
    print(f"  {'tier':12} {'command':>8} {'trials':>8} {'best F1':>8} {'to target':>10}  early stops")
    for tier, st in studies.items():
        shown = f"{reach[tier]:8.0f} s" if math.isfinite(reach[tier]) else f"{'never':>10}"
        print(f"  {tier:12} {walls[tier]:6.0f} s {wall_seconds(st):6.0f} s {bests[tier]:8.3f} {shown}  "
              f"{early_stops(st)}")
    if "advanced" in reach and "expert-asha" in reach:
        advanced, expert = (mean_time([studies[tier]], target) for tier in ("advanced", "expert-asha"))
        print(f"expert_vs_advanced={advanced / expert:.2f}")


if __name__ == "__main__":
    main()
