"""What running a trial through Ray Tune costs against the Optuna tier's persistent worker: the same
sweep of identical quick trials, one at a time, on each backend, through the real CLI.

Every trial trains the same thing (test_resnet at 16 px, one thread, the same learning rate: a
space of one choice, so the sampler cannot vary it) on a subset of the embedded digits. Ray runs
with the fifo scheduler (nothing stopped) and reuses its trial actor, as the Optuna worker
reuses its process. From each study: seconds per trial in steady state (the first trial's end to
the last one's, over the trials between: start-up excluded), each trial's time outside its
epochs (ask to tell minus the epochs' own seconds), the gap between one trial's tell and the
next one's ask, and the one-off costs: start-up (the command's start to the first trial's end,
less one steady trial) and wind-down (the last trial's end to the command's exit). Rounds
alternate the backends. Last line: `ray_overhead_s=` (Ray's seconds per trial minus Optuna's,
medians over rounds).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from _common import run_sweep

from engine.storage import Store

BACKENDS = ("optuna", "ray")


def config(backend: str, trials: int, epochs: int, subset: int) -> dict[str, Any]:
    """A sweep of `trials` identical trials, one at a time, on `backend`."""
    out: dict[str, Any] = {
        "train": {"model": "test_resnet", "epochs": epochs, "image_size": 16},
        "data": {"subset": subset},
        "search_space": {"lr": {"choices": [1.0e-3]}},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": trials},
        "checkpoints": {"keep": 0},
        "resources": {"parallel": 1, "threads_per_worker": 1, "batch_multiplier": 1.0},
    }
    if backend == "ray":
        out.update(backend="ray", scheduler={"name": "fifo"})
        out["resources"]["cpus_per_trial"] = 1
    else:
        out["pruner"] = {"name": "none"}
    return out


def measure(workdir: Path, backend: str, trials: int, epochs: int, subset: int) -> dict[str, float]:
    """One sweep's figures, in seconds (see the module's docstring)."""
    path = workdir / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(config(backend, trials, epochs, subset)))
    launched = datetime.now()  # Optuna's trial times are naive local times too
    started = time.perf_counter()
    study = run_sweep(path, workdir / "runs")
    command = time.perf_counter() - started
    done = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                  key=lambda t: t.datetime_start)
    if len(done) < 2:
        raise SystemExit(f"{backend}: {len(done)} trial(s) completed of {trials}: see {workdir}")
    store = Store(f"sqlite:///{workdir / 'runs' / 'hpo.db'}", readonly=True)
    outside = [(t.datetime_complete - t.datetime_start).total_seconds()
               - sum(e["seconds"] for e in store.epochs_of(t._trial_id)) for t in done]
    store.close()
    gaps = [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in itertools.pairwise(done)]
    per_trial = (done[-1].datetime_complete - done[0].datetime_complete).total_seconds() / (len(done) - 1)
    return {
        "per_trial": per_trial,
        "outside": statistics.median(outside),
        "gap": statistics.median(gaps),
        # Ray's first trial starts its actor (imports, data) after the trial was asked: counted
        # to the first trial's end, less one steady trial, both backends pay the same things.
        "start": (done[0].datetime_complete - launched).total_seconds() - per_trial,
        "end": command - (done[-1].datetime_complete - launched).total_seconds(),
        "command": command,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per sweep (default 10)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--subset", type=int, default=400, help="digits used (default 400)")
    parser.add_argument("--rounds", type=int, default=1, help="sweeps per backend, alternating (default 1)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
    for r in range(args.rounds):
        for backend in BACKENDS if r % 2 == 0 else BACKENDS[::-1]:
            with tempfile.TemporaryDirectory(prefix=f"ray-overhead-{backend}-") as tmp:
                runs[backend].append(measure(Path(tmp), backend, args.trials, args.epochs, args.subset))
            print(f"round {r + 1} {backend}: {runs[backend][-1]['per_trial']:.2f} s a trial", flush=True)
    med = {b: {k: statistics.median(run[k] for run in runs[b]) for k in runs[b][0]} for b in BACKENDS}
    print(f"\n{args.trials} identical trials of {args.epochs} epoch(s), one at a time, {args.subset} digits; "
          f"medians of {args.rounds} round(s)")
    print(f"  {'backend':8} {'per trial':>10} {'outside epochs':>15} {'between trials':>15} {'start-up':>9} "
          f"{'wind-down':>10} {'command':>8}")
    for b in BACKENDS:
        m = med[b]
        print(f"  {b:8} {m['per_trial']:8.2f} s {m['outside'] * 1000:12.0f} ms {m['gap'] * 1000:12.0f} ms "
              f"{m['start']:7.1f} s {m['end']:8.1f} s {m['command']:6.1f} s")
    print(f"ray_overhead_s={med['ray']['per_trial'] - med['optuna']['per_trial']:.2f}")


if __name__ == "__main__":
    main()
