"""Small real photo datasets: what the data decides (image size, augmentation, training length),
statistics that do not collapse after few steps, and early stopping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DataConfig, SweepConfig, TrainConfig
from engine.datasets import defaults
from engine.datasets.samples import make_photos
from engine.datasets.scan import scan, splits
from engine.training.fit import EarlyStop, Runtime, fit, validate
from engine.training.tensors import load


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """201 photos of 3 classes at mixed sizes: crops of the photos scikit-learn and matplotlib ship."""
    return make_photos(tmp_path_factory.mktemp("photos"), per_class=67)


def test_photos_get_photo_settings_and_glyphs_glyph_settings(photos: Path) -> None:
    config = SweepConfig.model_validate({"data": {"path": str(photos)}, "train": {"epochs": 4, "min_steps": 100},
                                         "resources": {"device": "cpu"},
                                         "search_space": {"batch_size": {"choices": [16, 32]}}})
    notes = defaults.apply(config, scan(config.data))
    train = config.train
    assert (train.image_size, train.augment, train.hflip) == (64, defaults.PHOTO_AUGMENT, True)
    # 162 training images at the largest batch the space can pick (32): 6 steps an epoch, so 17 epochs
    assert train.epochs == 17
    assert notes == ["data: photos (median 116x111 px, colour): image_size 64, augment 0.3, hflip on",
                     "train.epochs 4 -> 17: min_steps 100, at 6 optimizer steps per epoch (162 training images, "
                     "batch 32)"]
    cuda = SweepConfig.model_validate({"data": {"path": str(photos)}, "resources": {"device": "cuda"}})
    defaults.apply(cuda, scan(cuda.data))
    assert cuda.train.image_size == 96  # the largest ladder size under the photos' median side (113 px)
    digits = SweepConfig.model_validate({"train": {"epochs": 4, "max_steps": 50}, "resources": {"device": "cuda"}})
    notes = defaults.apply(digits, scan(digits.data))
    assert (digits.train.image_size, digits.train.augment, digits.train.hflip) == (defaults.GLYPH_SIZE, 0.0, False)
    assert digits.train.epochs == 2  # 23 steps an epoch at batch 64: two epochs stay under 50 steps
    assert notes[0].startswith("data: small glyph-like images (median 8x8 px, greyscale)")


def test_epochs_in_the_space_are_left_alone() -> None:
    config = SweepConfig.model_validate({"train": {"min_steps": 1000, "image_size": 16, "augment": 0,
                                                   "hflip": False},
                                         "search_space": {"epochs": {"choices": [1, 2]}}})
    assert defaults.apply(config, scan(config.data)) == [
        "train.min_steps/max_steps not applied: epochs is in the search space"]
    assert config.train.epochs == 3


def test_few_steps_on_few_photos_do_not_collapse_to_one_class(photos: Path) -> None:
    """Four epochs of 162 photos are 24 steps: BatchNorm's running averages are still mostly
    their initial values then, and this model's eval-mode predictions fell to one or two classes
    until validation recomputed them over the training images."""
    torch.set_num_threads(1)
    data_cfg = DataConfig(path=str(photos))
    data = load(scan(data_cfg), data_cfg, 32)
    split = splits(data.labels.numpy(), data_cfg)[0]
    cfg = TrainConfig(model="test_efficientnet", epochs=4, batch_size=32, image_size=32, lr=2e-3,
                      warmup_ratio=0.05, augment=0, hflip=False)
    _model, history = fit(cfg, data, split, Runtime())
    # Without the recomputed statistics: val F1 0.17 (one class) after the first epoch, 0.52 after the fourth
    assert min(m.val_f1 for m in history) >= 0.6, [round(m.val_f1, 3) for m in history]
    final = history[-1]
    assert min(final.class_f1) > 0.5  # every class is predicted, and mostly right
    assert len(final.class_f1) == 3 and final.val_f1 == pytest.approx(np.mean(final.class_f1), abs=1e-3)


def test_early_stopping_ends_a_stalled_run_and_keeps_its_best_weights() -> None:
    torch.set_num_threads(1)
    data_cfg = DataConfig(subset=200)
    data = load(scan(data_cfg), data_cfg, 16)
    split = splits(data.labels.numpy(), data_cfg)[0]
    stop = EarlyStop("val_loss", maximize=False, patience=2, min_delta=0.0)
    # A learning rate that goes up and never back down: the loss improves, then gets worse
    cfg = TrainConfig(model="test_resnet", epochs=12, image_size=16, lr=0.5, scheduler="none", augment=0,
                      hflip=False, optimizer="sgd")
    model, history = fit(cfg, data, split, Runtime(), early_stop=stop)
    best = stop.best_epoch(history)
    assert len(history) == best + 1 + stop.patience < cfg.epochs  # stopped `patience` epochs after the best
    assert [m.epoch for m in history] == list(range(len(history)))
    # The model returned is the best epoch's, not the last one's
    mean, std = data.mean_std(16, split[0])
    from engine.training.fit import _Loop

    loop = _Loop(model=model, optimizer=None, schedule=None, scaler=None, loss_fn=None,  # type: ignore[arg-type]
                 device=torch.device("cpu"), runtime=Runtime(), generator=torch.Generator(), mean=mean, std=std)
    assert validate(loop, data, split[1], cfg)[0] == pytest.approx(history[best].val_loss, rel=1e-4)


def test_best_epoch_counts_only_gains_above_min_delta() -> None:
    from engine.training.fit import EpochMetrics

    def epochs(*f1: float) -> list[EpochMetrics]:
        return [EpochMetrics(epoch=i, train_loss=0, val_loss=0, val_accuracy=0, val_f1=v, lr=0, samples_per_s=0,
                             peak_mem_mb=0, seconds=0) for i, v in enumerate(f1)]

    assert EarlyStop("val_f1", True, 2).best_epoch(epochs(0.5, 0.7, 0.6, 0.71)) == 3
    assert EarlyStop("val_f1", True, 2, min_delta=0.05).best_epoch(epochs(0.5, 0.7, 0.6, 0.71)) == 1
    assert EarlyStop("val_loss", False, 2).best_epoch(epochs(0.5, 0.7)) == 0  # val_loss 0 throughout: the first
