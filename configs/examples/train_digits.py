"""A small training script in plain PyTorch, as a team has it before any sweep: argparse flags
in, one JSON line per epoch out. It knows nothing about tui-hpo (or W&B): the sweep passes the
parameters as `--name=value` flags and reads the JSON lines.

The data: the 1,797 handwritten 8x8 digits of the UCI set, as scikit-learn ships them inside its
package (`sklearn/datasets/data/digits.csv.gz`, found without importing scikit-learn), or any
CSV (optionally gzipped) whose rows are 64 pixel values (0-16) and a label (`--data FILE`).
A seeded 80/20 split; a two-layer MLP; SGD with momentum; one thread (a model this small gets
nothing from more).

    python train_digits.py --lr 0.05 --epochs 10 --hidden 64 --batch-size 64
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


def bundled_digits() -> Path:
    spec = importlib.util.find_spec("sklearn")  # locates the package; does not import it
    if spec is None or spec.origin is None:
        sys.exit("no --data given and scikit-learn is not installed: pass --data digits.csv")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels scaled to 0..1, labels) from a CSV of 64 pixel values and a label per row."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with raw, io.TextIOWrapper(raw, encoding="ascii") as text:
        rows = [[float(v) for v in row] for row in csv.reader(text) if row]
    table = torch.tensor(rows)
    return table[:, :-1] / 16.0, table[:, -1].long()


def sgd_step(model: nn.Module, velocity: list[torch.Tensor], args: argparse.Namespace) -> None:
    """torch.optim.SGD's update, written out: any torch.optim optimizer imports torch._dynamo when
    it is made, 1.7 s on two cores, longer than this model takes to train."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), velocity, strict=True):
            v.mul_(args.momentum).add_(p.grad + args.weight_decay * p)
            p.sub_(args.lr * v)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="CSV(.gz): 64 pixels and a label per row")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    # Not a JSON line, so a sweep keeps it in the trial's log and does not read it as a metric
    print("hyperparameters:", json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                         sort_keys=True), flush=True)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x, y = load(args.data or bundled_digits())
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # the same split for every run
    n_val = len(y) // 5
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 0.1  # + 0.1: a pixel blank in every image stays 0
    x = (x - mean) / std
    model = nn.Sequential(nn.Linear(x.shape[1], args.hidden), nn.ReLU(), nn.Linear(args.hidden, int(y.max()) + 1))
    velocity = [torch.zeros_like(p) for p in model.parameters()]
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for batch in train_idx[torch.randperm(len(train_idx))].split(args.batch_size):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            model.zero_grad()
            loss.backward()
            sgd_step(model, velocity, args)
            total, seen = total + loss.item() * len(batch), seen + len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(x[val_idx])
            val_loss = F.cross_entropy(logits, y[val_idx]).item()
            val_accuracy = (logits.argmax(1) == y[val_idx]).float().mean().item()
        train_loss = total / seen
        if not math.isfinite(train_loss):
            sys.exit(f"epoch {epoch}: the loss diverged (lr {args.lr})")
        print(json.dumps({"epoch": epoch, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
                          "val_accuracy": round(val_accuracy, 5)}), flush=True)


if __name__ == "__main__":
    main()
