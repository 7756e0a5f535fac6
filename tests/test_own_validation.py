"""A validation set of the user's own (`data.val`, `--val-data`) instead of a split, and a test set
(`data.test`) reported once for the best trial: a real tiny sweep on small PNG folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from engine.config import DataConfig
from engine.datasets.scan import labels_of, parts_of, scan, splits
from engine.errors import ConfigError
from tests.conftest import ROOT, run_cli, write_png

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
FIXED = {"TUI_HPO__SEARCH_SPACE__BATCH_SIZE": "null", "TUI_HPO__TRAIN__BATCH_SIZE": "16"}


def folder(root: Path, per_class: int, start: int = 0) -> Path:
    """Two separable classes (dark, bright), `per_class` PNGs each, named from `start` on."""
    for i in range(start, start + per_class):
        write_png(root / "dark" / f"d{i}.png", 40 + i % 7)
        write_png(root / "bright" / f"b{i}.png", 210 - i % 7)
    return root


def test_own_validation_and_test_set_in_a_real_sweep(tmp_path: Path) -> None:
    train = folder(tmp_path / "train", 16)
    val = folder(tmp_path / "val", 5, start=100)
    test = folder(tmp_path / "test", 3, start=200)
    (val / "bright" / "broken.png").write_bytes(b"not a png")  # skipped and reported, as in data.path
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(TINY), "--train-data", str(train), "--val-data", str(val),
                     "--test-data", str(test), "--workdir", str(workdir), "--no-tui", "--n-trials", "2",
                     env=FIXED, timeout=240)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'hpo.db'}")
    data = study.user_attrs["tui_hpo"]["data"]
    assert (data["train"], data["val"], data["test"]) == (32, 10, 6)
    assert data["val_counts"] == {"bright": 5, "dark": 5}
    # No training image validates: the validation indices are exactly data.val's images.
    cfg = DataConfig(path=str(train), val=str(val), test=str(test))
    found = scan(cfg)
    (train_idx, val_idx), = splits(labels_of(found), cfg, parts_of(found))
    assert {found.entries[i].path.parent.parent for i in val_idx} == {val.resolve()}
    assert {found.entries[i].path.parent.parent for i in train_idx} == {train.resolve()}
    assert any("val: bright/broken.png (not an image)" in p + f" ({why})" for p, why in found.skipped)
    tested = study.user_attrs["tui_hpo"].get("test")
    assert tested is not None, "the best trial's test figures"
    assert tested["trial"] == study.best_trial.number and tested["images"] == 6
    assert 0.0 <= tested["accuracy"] <= 1.0 and 0.0 <= tested["f1"] <= 1.0
    report = json.loads((workdir / "tiny" / "report.json").read_text())
    assert report["test"] == tested
    shown = run_cli("summary", "--workdir", str(workdir))
    assert f"trial {tested['trial']}: accuracy {tested['accuracy']:.4f}, macro-F1 {tested['f1']:.4f} on 6 images" \
        in " ".join(shown.stdout.split()), shown.stdout


def test_a_val_class_unknown_to_training_fails_in_one_line(tmp_path: Path) -> None:
    train = folder(tmp_path / "train", 4)
    val = folder(tmp_path / "val", 2, start=100)
    write_png(val / "cat" / "c0.png", 120)
    workdir = tmp_path / "runs"
    result = run_cli("run", "--config", str(TINY), "--data", str(train), "--val-data", str(val),
                     "--workdir", str(workdir), "--no-tui", env=FIXED, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "data.val: class(es) cat not in the training data" in lines[0]
    assert "Traceback" not in result.stderr
    assert not workdir.exists() or not any(workdir.iterdir()), "nothing written"


def test_folds_with_an_own_validation_set_are_refused() -> None:
    from engine.config.schema import validate

    with pytest.raises(ConfigError, match=r"data\.val: a validation set of your own replaces the folds"):
        validate({"data": {"path": "x", "val": "y", "folds": 3}}, None)


def test_without_data_val_the_split_is_unchanged() -> None:
    labels = np.repeat(np.arange(3), 20)
    cfg = DataConfig(val_fraction=0.25, subset=30)
    plain = splits(labels, cfg)
    parted = splits(labels, cfg, np.full(len(labels), "train"))
    assert all(np.array_equal(a, b) for pa, pb in zip(plain, parted, strict=True) for a, b in zip(pa, pb, strict=True))
