"""A team's trainer as the origin documents have it, knowing nothing about tui-hpo:

    SEED=1 LEARNING_RATE=0.05 BATCH_SIZE=64 python trainer.py --config cfg.yaml \\
        --train-data data/digits_train.csv --val-data data/digits_val.csv

The YAML holds sections `model`, `optimizer` and `training` (anything else in it is ignored);
SEED, LEARNING_RATE, BATCH_SIZE and EPOCHS in the environment override `training`, as the
team's shell loops set them. It logs a plain line per epoch (no JSON) and at the end writes
`<output-dir>/results/training_results.json` with the best epoch's metrics under `best_metrics`.

The data: CSV files with a header, 64 pixel columns (0-16) and `label` (prepare_data.py writes
them from the digits scikit-learn ships). A two-layer MLP, SGD with momentum, one thread.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn import functional as F

DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden": 64},
    "optimizer": {"momentum": 0.9, "weight_decay": 0.0},
    "training": {"epochs": 20, "lr": 0.05, "batch_size": 64, "seed": 0},
}
ENVIRONMENT = {"SEED": ("seed", int), "LEARNING_RATE": ("lr", float), "BATCH_SIZE": ("batch_size", int),
               "EPOCHS": ("epochs", int)}


def load_config(path: Path | None) -> dict[str, dict[str, Any]]:
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        given = yaml.safe_load(path.read_text()) or {}
        for section, values in cfg.items():
            values.update(given.get(section) or {})
    for var, (key, kind) in ENVIRONMENT.items():
        if var in os.environ:
            cfg["training"][key] = kind(os.environ[var])
    return cfg


def read_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, newline="", encoding="ascii") as fh:
        rows = list(csv.DictReader(fh))
    labels = torch.tensor([int(r.pop("label")) for r in rows])
    pixels = torch.tensor([[float(v) for v in r.values()] for r in rows])
    return pixels, labels


def macro_f1(pred: torch.Tensor, target: torch.Tensor, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = ((pred == c) & (target == c)).sum().item()
        fp = ((pred == c) & (target != c)).sum().item()
        fn = ((pred != c) & (target == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return sum(scores) / classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--train-data", type=Path, required=True)
    parser.add_argument("--val-data", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    cfg = load_config(args.config)
    print("config:", json.dumps(cfg, sort_keys=True), flush=True)
    model_cfg, opt_cfg, train_cfg = cfg["model"], cfg["optimizer"], cfg["training"]
    torch.set_num_threads(1)
    torch.manual_seed(train_cfg["seed"])
    x_train, y_train = read_csv(args.train_data)
    x_val, y_val = read_csv(args.val_data)
    x_train, x_val = x_train / 16, x_val / 16
    mean, std = x_train.mean(0), x_train.std(0) + 0.1  # + 0.1: a pixel blank in every image stays 0
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    classes = int(y_train.max()) + 1
    model = nn.Sequential(nn.Linear(x_train.shape[1], model_cfg["hidden"]), nn.ReLU(),
                          nn.Linear(model_cfg["hidden"], classes))
    # SGD with momentum written out: a torch.optim optimizer imports torch._dynamo when it is
    # made, 1.7 s on two cores, longer than this model trains.
    velocity = [torch.zeros_like(p) for p in model.parameters()]
    started, history = time.monotonic(), []
    for epoch in range(1, train_cfg["epochs"] + 1):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(y_train)).split(train_cfg["batch_size"]):
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p, v in zip(model.parameters(), velocity, strict=True):
                    v.mul_(opt_cfg["momentum"]).add_(p.grad + opt_cfg["weight_decay"] * p)
                    p.sub_(train_cfg["lr"] * v)
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
        pred = logits.argmax(1)
        row = {"epoch": epoch, "train_loss": total / len(y_train), "val_loss": F.cross_entropy(logits, y_val).item(),
               "val_accuracy": (pred == y_val).float().mean().item(), "val_f1": macro_f1(pred, y_val, classes)}
        history.append(row)
        print(f"epoch {epoch}/{train_cfg['epochs']} | train_loss {row['train_loss']:.4f} | "
              f"val_loss {row['val_loss']:.4f} | val_acc {row['val_accuracy']:.4f} | val_f1 {row['val_f1']:.4f}",
              flush=True)
    best = max(history, key=lambda r: r["val_f1"])
    results = {"best_epoch": best["epoch"], "best_metrics": {k: v for k, v in best.items() if k != "epoch"},
               "final_metrics": {k: v for k, v in history[-1].items() if k != "epoch"},
               "train_time_s": time.monotonic() - started, "history": history}
    out = args.output_dir / "results" / "training_results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"best val_f1 {best['val_f1']:.4f} at epoch {best['epoch']}; results in {out}")


if __name__ == "__main__":
    main()
