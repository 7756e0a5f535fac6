"""Trial turnaround: trivially short trials through one persistent worker on SQLite.

What is left once training is nearly free is the engine's own cost per trial: sampling, the
budget claim, Optuna's ask/tell, user attributes, the epoch row, events and heartbeats. Prints
`trials_per_s=<x>` last (goal >= 10; a fresh process per trial costs ~3 s of imports here).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import run_sweep, span_seconds


def measure(sampler: str, n_trials: int, workdir: Path) -> float:
    config = workdir / f"turnaround_{sampler}.yaml"
    config.write_text("data: {subset: 40}\n"
                      "train: {model: test_resnet, epochs: 1, image_size: 8, batch_size: 64}\n"
                      "search_space:\n  lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                      "  weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}\n"
                      f"sampler: {{name: {sampler}, seed: 0}}\npruner: {{name: none}}\n"
                      f"budget: {{n_trials: {n_trials}}}\n"
                      "resources: {parallel: 1, threads_per_worker: 1, batch_multiplier: 1.0}\n")
    study = run_sweep(config, workdir / "runs")
    trials = study.trials
    assert len(trials) == n_trials
    return len(trials) / span_seconds(trials)


FRESH_PROCESS_TRIAL = """
import optuna, timm, torch
torch.set_num_threads(1)
study = optuna.create_study()
trial = study.ask()
model = timm.create_model("test_resnet", num_classes=10)
model(torch.randn(2, 3, 8, 8)).sum().backward()
study.tell(trial, trial.suggest_float("lr", 1e-4, 1e-2, log=True))
"""


def fresh_process_per_trial(n: int = 3) -> float:
    """The baseline: a new Python process per trial, paying the imports every time."""
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-c", FRESH_PROCESS_TRIAL], check=True, capture_output=True)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tpe = measure("tpe", args.n_trials, Path(tmp))
        print(f"tpe sampler:    {tpe:.1f} trials/s over {args.n_trials} trials (sampling cost grows with history)")
    with tempfile.TemporaryDirectory() as tmp:
        rnd = measure("random", args.n_trials, Path(tmp))
        print(f"random sampler: {rnd:.1f} trials/s over {args.n_trials} trials (engine cost alone)")
    fresh = fresh_process_per_trial()
    print(f"baseline, a fresh process per trivial trial: {fresh:.2f} trials/s -> persistent worker x{rnd / fresh:.0f}")
    print(f"trials_per_s={rnd:.1f}")


if __name__ == "__main__":
    main()
