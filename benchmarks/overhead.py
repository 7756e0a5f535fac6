"""Engine overhead on training throughput: the same model, data and epochs trained by a minimal
hand-written PyTorch loop and as a sweep trial (real CLI, persistent worker, SQLite), side by side.

Both sides time the same work: build the model, then per epoch one training pass and one
validation pass, one thread. Prints `ratio=<engine/plain throughput>` last (goal >= 0.97).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from _common import run_sweep

MODEL, EPOCHS, BATCH, SIZE, LR = "test_resnet", 4, 64, 32, 2e-3


def plain_loop() -> float:
    """Seconds for build + EPOCHS x (train + validate) with nothing but PyTorch."""
    from engine.config import DataConfig
    from engine.datasets.scan import scan, splits
    from engine.training.tensors import load

    cfg = DataConfig()
    data = load(scan(cfg), cfg, SIZE)
    train_idx, val_idx = splits(data.labels.numpy(), cfg)[0]
    x = data.images(SIZE).float().div(255)
    x = (x - x[train_idx].mean((0, 2, 3), keepdim=True)) / x[train_idx].std((0, 2, 3), keepdim=True)
    y = data.labels
    started = time.perf_counter()
    torch.manual_seed(0)
    model = timm.create_model(MODEL, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
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
    return time.perf_counter() - started


def engine_trial(workdir: Path) -> float:
    """Seconds of one sweep trial (ask to tell, as Optuna records it) with the same settings."""
    config = workdir / "overhead.yaml"
    config.write_text(f"train: {{model: {MODEL}, epochs: {EPOCHS}, batch_size: {BATCH}, image_size: {SIZE}, "
                      f"lr: {LR}, warmup_ratio: 0.0, scheduler: none}}\n"
                      "resources: {parallel: 1, threads_per_worker: 1, batch_multiplier: 1.0}\n"
                      "pruner: {name: none}\nbudget: {n_trials: 1}\n")
    study = run_sweep(config, workdir / "runs")
    trial = study.trials[0]
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = 1438 * EPOCHS
    plain, engine = [], []
    for r in range(args.repeats):  # alternate, so drift on the machine hits both sides alike
        plain.append(plain_loop())
        with tempfile.TemporaryDirectory() as tmp:
            engine.append(engine_trial(Path(tmp)))
        print(f"run {r + 1}: plain {samples / plain[-1]:7.0f} samples/s   engine {samples / engine[-1]:7.0f} samples/s")
    p, e = statistics.median(plain), statistics.median(engine)
    print(f"median: plain {p:.2f}s, engine trial {e:.2f}s ({MODEL}, {EPOCHS} epochs, batch {BATCH}, 1 thread)")
    print(f"ratio={p / e:.3f}")


if __name__ == "__main__":
    main()
