"""Engine overhead on training throughput: the same model, data and epochs trained by a minimal
hand-written PyTorch loop and as sweep trials (real CLI, persistent worker, SQLite), side by side.

Both sides time the same work: build the model, then per epoch one training pass and one
validation pass, one thread. Rounds alternate the two sides, so drift on the machine hits both
alike; each round runs several trials per side in one fresh process (the plain loop in a
subprocess too, so both pay the same start-up and warm-up). Prints each side's median and
spread, the ratio per round, and `ratio=<engine/plain throughput, median of rounds>` last
(goal >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, run_sweep

from engine.storage import Store

MODEL, BATCH, SIZE, LR = "test_resnet", 64, 32, 2e-3
TRAIN_IMAGES = 1438


def plain_loops(trials: int, epochs: int) -> list[float]:
    """Seconds of build + `epochs` x (train + validate) with nothing but PyTorch, `trials` times."""
    import timm
    import torch
    import torch.nn.functional as F

    from engine.config import DataConfig
    from engine.datasets.scan import scan, splits
    from engine.training.tensors import load

    torch.set_num_threads(1)
    cfg = DataConfig()
    data = load(scan(cfg), cfg, SIZE)
    train_idx, val_idx = splits(data.labels.numpy(), cfg)[0]
    x = data.images(SIZE).float().div(255)
    x = (x - x[train_idx].mean((0, 2, 3), keepdim=True)) / x[train_idx].std((0, 2, 3), keepdim=True)
    y = data.labels
    seconds = []
    for _ in range(trials):
        started = time.perf_counter()
        torch.manual_seed(0)
        model = timm.create_model(MODEL, num_classes=10)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
        gen = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            model.train()
            order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=gen)]
            for i in range(0, len(order), BATCH):
                idx = order[i:i + BATCH]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                vidx = torch.from_numpy(val_idx)
                for i in range(0, len(vidx), 256):
                    model(x[vidx[i:i + 256]]).argmax(1)
        seconds.append(time.perf_counter() - started)
    return seconds


def plain_side(trials: int, epochs: int) -> list[float]:
    """`plain_loops` in a fresh process, as the engine's trials run in a fresh worker."""
    out = subprocess.run([sys.executable, __file__, "--plain", str(trials), "--epochs", str(epochs)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine_side(workdir: Path, trials: int, epochs: int) -> tuple[list[float], list[float]]:
    """Seconds of each sweep trial (ask to tell, as Optuna records it) with the same settings, and
    of each trial's time outside its epochs (what the engine adds around training: ask, tell,
    building the model, writes), from the engine's own records: a figure machine noise barely
    moves, unlike the ratio of two separately timed runs."""
    config = workdir / "overhead.yaml"
    config.write_text(f"train: {{model: {MODEL}, epochs: {epochs}, batch_size: {BATCH}, image_size: {SIZE}, "
                      f"lr: {LR}, warmup_ratio: 0.0, scheduler: none}}\n"
                      "resources: {parallel: 1, threads_per_worker: 1, batch_multiplier: 1.0}\n"
                      f"pruner: {{name: none}}\nbudget: {{n_trials: {trials}}}\n"
                      "checkpoints: {keep: 0}\n")
    study = run_sweep(config, workdir / "runs")
    store = Store(f"sqlite:///{workdir / 'runs' / 'hpo.db'}", readonly=True)
    totals, outside = [], []
    for t in study.trials:
        total = (t.datetime_complete - t.datetime_start).total_seconds()
        totals.append(total)
        outside.append(total - sum(e["seconds"] for e in store.epochs_of(t._trial_id)))
    store.close()
    return totals, outside


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (each side once per round)")
    parser.add_argument("--trials", type=int, default=3, help="trials per side and round")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (1: trials of about 2 s)")
    parser.add_argument("--plain", type=int, metavar="N", help=argparse.SUPPRESS)  # the subprocess side
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(plain_loops(args.plain, args.epochs)))
        return
    plain: list[float] = []
    engine: list[float] = []
    outside: list[float] = []
    ratios: list[float] = []
    for r in range(args.rounds):
        p = plain_side(args.trials, args.epochs)
        with tempfile.TemporaryDirectory() as tmp:
            e, o = engine_side(Path(tmp), args.trials, args.epochs)
        plain += p
        engine += e
        outside += o
        ratios.append(statistics.median(p) / statistics.median(e))
        samples = TRAIN_IMAGES * args.epochs
        print(f"round {r + 1}: plain {samples / statistics.median(p):6.0f} samples/s   "
              f"engine {samples / statistics.median(e):6.0f} samples/s   ratio {ratios[-1]:.3f}")
    print(f"plain loop:   {spread(plain)}")
    print(f"engine trial: {spread(engine)}")
    print(f"ratio per round: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} "
          f"({MODEL}, {args.epochs} epoch(s), batch {BATCH}, 1 thread)")
    around = statistics.median(outside)
    print(f"engine time around the epochs: median {around * 1000:.0f} ms per trial "
          f"= {around / statistics.median(engine):.1%} of a trial")
    print(f"ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
