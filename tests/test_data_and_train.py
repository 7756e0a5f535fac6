"""Datasets, splits and the training functions, without the sweep around them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DataConfig, TrainConfig
from engine.datasets.scan import load_digits, scan, splits
from engine.errors import DataError
from engine.training.fit import Runtime, build_schedule, fit, macro_f1
from engine.training.tensors import augment, load


def test_embedded_digits_ship_with_the_install() -> None:
    pixels, labels = load_digits()
    assert pixels.shape == (1797, 8, 8) and pixels.dtype == np.uint8 and pixels.max() == 255
    assert sorted(set(labels.tolist())) == list(range(10))


def test_stratified_split_and_folds_are_fixed_and_disjoint() -> None:
    labels = np.repeat(np.arange(5), 40)
    (train, val), = splits(labels, DataConfig(val_fraction=0.25))
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 200
    assert all((labels[val] == c).sum() == 10 for c in range(5))  # stratified
    assert np.array_equal(val, splits(labels, DataConfig(val_fraction=0.25))[0][1])  # fixed seed
    folds = splits(labels, DataConfig(folds=4))
    vals = np.concatenate([v for _t, v in folds])
    assert sorted(vals.tolist()) == list(range(200))
    assert all(abs((labels[v] == 0).sum() - 10) <= 1 for _t, v in folds)


def test_imagefolder_scan_reports_broken_files(image_folder: Path) -> None:
    found = scan(DataConfig(path=str(image_folder)))
    assert found.layout == "imagefolder" and found.classes == ["bright", "dark"]
    assert found.count == 48
    reasons = dict(found.skipped)
    assert reasons["dark/empty.png"] == "empty" and reasons["dark/notes.txt"] == "not an image"
    assert reasons["bright/fake.png"] == "not an image" and "bright/truncated.png" in reasons


def test_csv_scan_never_leaves_the_image_folder(csv_dataset: Path) -> None:
    found = scan(DataConfig(path=str(csv_dataset)))
    assert found.layout == "csv" and found.count == 30 and found.classes == ["0", "1"]
    reasons = dict(found.skipped)
    assert reasons["../escape.png"] == "outside the data folder"
    assert reasons["/etc/passwd"] == "outside the data folder"
    assert reasons["missing.png"] == "missing" and reasons["img1.png"] == "duplicate id"


def test_csv_symlink_outside_root_is_not_followed(csv_dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes((csv_dataset / "train" / "img0.png").read_bytes())
    (csv_dataset / "train" / "link.png").symlink_to(outside)
    with open(csv_dataset / "train.csv", "a") as fh:
        fh.write("link.png,0\n")
    assert dict(scan(DataConfig(path=str(csv_dataset))).skipped)["link.png"] == "outside the data folder"


def test_csv_with_several_candidates_asks_for_labels(csv_dataset: Path) -> None:
    (csv_dataset / "other.csv").write_text("ID,target\n")
    with pytest.raises(DataError, match="several CSV files"):
        scan(DataConfig(path=str(csv_dataset)))
    assert scan(DataConfig(path=str(csv_dataset), labels=str(csv_dataset / "train.csv"))).count == 30


def write_labels(root: Path, header: str, row: Callable[[str, str], str]) -> None:
    """train.csv over `csv_dataset`'s 30 images, with other columns: `row(file, class)` is a line."""
    lines = [row(f"img{i}.png", "bright" if i % 2 else "dark") for i in range(30)]
    (root / "train.csv").write_text("\n".join([header, *lines]) + "\n")


@pytest.mark.parametrize(("header", "row", "columns"), [
    ("filename,category", lambda f, c: f"{f},{c}", ("filename", "category")),
    ("Image,Label", lambda f, c: f"{f},{c}", ("Image", "Label")),
    ("Class Name,notes,IMAGE-ID", lambda f, c: f"{c},x,{f}", ("IMAGE-ID", "Class Name")),
])
def test_csv_columns_are_recognised_by_name(csv_dataset: Path, header: str, row: Callable[[str, str], str],
                                            columns: tuple[str, str]) -> None:
    write_labels(csv_dataset, header, row)
    found = scan(DataConfig(path=str(csv_dataset)))
    assert found.count == 30 and found.classes == ["bright", "dark"]
    assert {e.path.name: found.classes[e.label] for e in found.entries}["img3.png"] == "bright"
    assert found.columns is not None and (found.columns.id, found.columns.label) == columns
    assert str(found.columns) == (f"train.csv: id column '{columns[0]}', label column '{columns[1]}' "
                                  "(recognised by name)")


def test_two_unnamed_columns_are_taken_by_position_only_after_file_names(csv_dataset: Path) -> None:
    write_labels(csv_dataset, "a,b", lambda f, c: f"{f},{c}")
    found = scan(DataConfig(path=str(csv_dataset)))
    assert found.count == 30 and found.columns is not None and (found.columns.id, found.columns.label) == ("a", "b")
    write_labels(csv_dataset, "a,b", lambda f, c: f"{c},{f}")  # which is which is not ours to guess
    with pytest.raises(DataError, match=r"train.csv: data.id_column: no column is named like the image ids; "
                                        r"columns: a, b; set data.id_column in the config or --id-column$"):
        scan(DataConfig(path=str(csv_dataset)))


def test_a_set_column_wins_over_recognition(csv_dataset: Path) -> None:
    write_labels(csv_dataset, "file,path,label", lambda f, c: f"wrong-{f},{f},{c}")
    with pytest.raises(DataError, match=r"data.id_column: several columns could hold the image ids \(file, path\)"):
        scan(DataConfig(path=str(csv_dataset)))
    found = scan(DataConfig(path=str(csv_dataset), id_column="path"))
    assert found.count == 30 and found.classes == ["bright", "dark"]
    assert str(found.columns) == "train.csv: id column 'path' (as set), label column 'label' (recognised by name)"
    write_labels(csv_dataset, "filename,stem,category", lambda f, c: f"wrong-{f},{f.removesuffix('.png')},{c}")
    assert scan(DataConfig(path=str(csv_dataset), id_column="stem")).count == 30  # over a unique name, too
    with pytest.raises(DataError, match=r"data.id_column: no column 'ID' \(columns: filename, stem, category\)"):
        scan(DataConfig(path=str(csv_dataset), id_column="ID"))  # a set column is required, as named


def test_images_are_cached_once_per_size(image_folder: Path) -> None:
    cfg = DataConfig(path=str(image_folder))
    data = load(scan(cfg), cfg, 32)
    assert data.cached and data.images(32).shape == (48, 3, 32, 32)
    assert data.images(16) is data.images(16)


def test_augment_keeps_shape_and_zero_strength_is_identity() -> None:
    x = torch.rand(4, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    assert augment(x, 0.0, False, gen) is x
    y = augment(x, 1.0, False, gen)
    assert y.shape == x.shape and not torch.equal(x, y)


def lrs(cfg: TrainConfig, steps: int) -> list[float]:
    """The learning rate of each of `steps` optimizer steps, as the training loop sets it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule = build_schedule(optimizer, cfg, steps)
    out = []
    for update in range(1, steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        schedule.step_update(update)
    return out


def test_schedule_and_metrics() -> None:
    cosine = lrs(TrainConfig(lr=1.0, warmup_ratio=0.1, scheduler="cosine"), 100)
    assert cosine[0] == pytest.approx(0.1) and cosine[5] < cosine[9] < cosine[10] == pytest.approx(1.0)
    assert cosine[55] == pytest.approx(0.5, abs=0.02) and cosine[99] < 0.01  # half way down, then ~0
    step = lrs(TrainConfig(lr=1.0, warmup_ratio=0.0, scheduler="step", step_gamma=0.1), 90)
    assert (step[0], step[29], step[30], step[60], step[89]) == pytest.approx((1.0, 1.0, 0.1, 0.01, 0.01))
    constant = lrs(TrainConfig(lr=0.5, warmup_ratio=0.2, scheduler="none"), 50)
    assert constant[0] == pytest.approx(0.05) and constant[10:] == pytest.approx([0.5] * 40)
    confusion = torch.tensor([[5, 0], [5, 0]])
    assert macro_f1(confusion) == pytest.approx((2 * 5 / (10 + 5) + 0) / 2)


def test_fit_is_deterministic_on_cpu_and_learns() -> None:
    torch.set_num_threads(1)
    cfg_data = DataConfig()
    data = load(scan(cfg_data), cfg_data, 16)
    split = splits(data.labels.numpy(), cfg_data)[0]
    cfg = TrainConfig(model="test_resnet", epochs=2, image_size=16, lr=5e-3, augment=0.3, hflip=True, accum_steps=2,
                      label_smoothing=0.1, dropout=0.1)
    _m1, first = fit(cfg, data, split, Runtime())
    _m2, second = fit(cfg, data, split, Runtime())
    assert [m.val_f1 for m in first] == [m.val_f1 for m in second]
    assert first[-1].val_accuracy > 0.5


def test_fit_stops_when_asked() -> None:
    from engine.errors import Interrupted

    cfg_data = DataConfig()
    data = load(scan(cfg_data), cfg_data, 16)
    split = splits(data.labels.numpy(), cfg_data)[0]
    with pytest.raises(Interrupted):
        fit(TrainConfig(epochs=1, image_size=16, augment=0, hflip=False), data, split, Runtime(),
            should_stop=lambda: True)


def test_sgd_step_scheduler_and_vit_image_size() -> None:
    cfg_data = DataConfig()
    data = load(scan(cfg_data), cfg_data, 32)
    split = splits(data.labels.numpy(), cfg_data)[0]
    cfg = TrainConfig(model="test_vit", epochs=1, image_size=32, augment=0, hflip=False, optimizer="sgd",
                      scheduler="step", drop_path=0.1)
    _model, history = fit(cfg, data, split, Runtime())
    assert np.isfinite(history[-1].val_loss)


def test_subset_is_stratified_and_split_inside() -> None:
    labels = np.repeat(np.arange(4), 50)
    (train, val), = splits(labels, DataConfig(subset=40, val_fraction=0.25))
    assert len(train) + len(val) == 40 and len(np.intersect1d(train, val)) == 0
    assert all((labels[np.concatenate([train, val])] == c).sum() == 10 for c in range(4))
    folds = splits(labels, DataConfig(subset=40, folds=2))
    assert sorted(np.concatenate([v for _t, v in folds]).tolist()) == sorted(np.concatenate([train, val]).tolist())


def test_images_resident_on_a_device_give_the_same_batches() -> None:
    """On a GPU an in-memory dataset is copied to the device once and batches are indexed there
    (no host copy per step); the batches, shuffled by the same seed, are the ones the host serves.
    Here the device is the CPU: the indexing is the same code."""

    cfg = DataConfig()
    data = load(scan(cfg), cfg, 16)
    idx = np.arange(0, 500, 3)
    host = list(data.batches(idx, 12, 64, True, torch.Generator().manual_seed(7)))
    resident = list(data.batches(idx, 12, 64, True, torch.Generator().manual_seed(7), device=torch.device("cpu")))
    assert len(host) == len(resident) == 3
    for (xa, ya), (xb, yb) in zip(host, resident, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert data.resident(12, torch.device("cpu")) is data.resident(12, torch.device("cpu")), "copied once"


def test_predict_reads_a_folder_with_a_labels_csv_as_training_does(tmp_path: Path) -> None:
    """`predict --data DIR` on the CSV layout took every image in the folder, ids `images/0.png`
    and no labels (so no accuracy), and read a broken CSV as if it were not there."""
    from engine.datasets.inputs import find_inputs
    from tests.conftest import write_png

    for i in range(4):
        write_png(tmp_path / "data" / "images" / f"{i}.png", 40 * i)
    (tmp_path / "data" / "labels.csv").write_text("filename,category\n0.png,cat\n1.png,dog\n2.png,cat\n")
    found = find_inputs(str(tmp_path / "data"))
    assert (found.ids, found.labels) == (["0.png", "1.png", "2.png"], ["cat", "dog", "cat"])
    assert [p.name for p in found.paths] == ["0.png", "1.png", "2.png"]
    assert scan(DataConfig(path=str(tmp_path / "data"))).count == 3, "training reads the same three"
    (tmp_path / "data" / "other.csv").write_text("id\n3.png\n")
    with pytest.raises(DataError, match="several CSV files"):
        find_inputs(str(tmp_path / "data"))
