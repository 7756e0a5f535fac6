"""Model packages, `predict` and `evaluate`. One real tiny sweep (1 trial, its checkpoint kept) on
digits written out as PNG files is shared by the whole file."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DataConfig
from engine.datasets.scan import labels_of, load_digits, scan, splits
from engine.errors import UserError
from engine.sweep import checkpoints
from engine.training.package import load_package, read_meta
from engine.training.predict import POLICIES, _zoom, fitting, views
from tests.conftest import invoke as cli
from tests.conftest import run_cli, write_png

pytestmark = pytest.mark.xdist_group("test_predict")
PER_CLASS = 40


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the study folder, the data folder) of a finished 1-trial sweep on digits as PNG files."""
    from PIL import Image

    base = tmp_path_factory.mktemp("predict")
    data = base / "digits"
    pixels, labels = load_digits()
    for c in range(10):
        for k, i in enumerate(np.flatnonzero(labels == c)[:PER_CLASS]):
            (data / str(c)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i]).save(data / str(c) / f"{c}_{k}.png")
    config = base / "tiny.yaml"
    config.write_text(f"name: tiny\ndata: {{path: {data}}}\ntrain: {{model: test_resnet, epochs: 2, image_size: 16}}\n"
                      "search_space:\n  lr: {low: 3.0e-3, high: 1.0e-2, log: true}\n"
                      "sampler: {name: tpe, seed: 0}\npruner: {name: none}\nbudget: {n_trials: 1}\n"
                      "resources: {parallel: 1, batch_multiplier: 1.0}\n")
    result = run_cli("run", "--config", str(config), "--workdir", str(base / "runs"), "--no-tui")
    assert result.returncode == 0, result.stderr
    return base / "runs" / "tiny", data



def recorded_val_accuracy(folder: Path) -> float:
    with sqlite3.connect(folder.parent / "hpo.db") as db:
        return db.execute("SELECT val_accuracy FROM hpo_epoch ORDER BY epoch DESC LIMIT 1").fetchone()[0]


def test_the_checkpoint_is_a_package_that_stands_alone(swept: tuple[Path, Path]) -> None:
    folder, _data = swept
    best = folder / checkpoints.BEST
    assert best.name == "best_model.safetensors" and os.path.samefile(best, checkpoints.path_of(folder, 0))
    assert checkpoints.path_of(folder, 0).name == "trial_0.safetensors" and not list(folder.rglob("*.pt"))
    package = read_meta(best)
    assert package.classes == tuple(str(d) for d in range(10)) and package.image_size == package.decode_size == 16
    assert package.model == "test_resnet" and package.model_kwargs["num_classes"] == 10
    assert package.meta["trial"] == 0 and package.train["image_size"] == 16 and package.data["path"]
    assert package.metrics["val_accuracy"] == pytest.approx(recorded_val_accuracy(folder))
    # Statistics of the digits' training images: dark (mostly 0) with some ink, the same per channel.
    assert len(package.mean) == len(package.std) == 3 and 0.1 < package.mean[0] < 0.5
    assert package.mean[0] == package.mean[1] == package.mean[2] and package.std[0] > 0.2
    # Without tui-hpo: safetensors + timm + json, as the README shows, give the same model.
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(best), "pt") as fh:
        meta = json.loads(fh.metadata()["tui_hpo"])
    plain = timm.create_model(meta["model"], **meta["model_kwargs"])
    plain.load_state_dict(load_file(str(best)))
    model, _ = load_package(best, "cpu")
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(x), model(x), rtol=0, atol=0)


def test_predicting_the_validation_images_reproduces_the_trial_accuracy(swept: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    folder, data = swept
    cfg = DataConfig(path=str(data))
    found = scan(cfg)  # the worker's way: scan, then the first split of its labels
    _train, val = splits(labels_of(found), cfg)[0]
    listing = tmp_path / "val.csv"
    rows = [(found.entries[i].path.relative_to(data).as_posix(), found.classes[found.entries[i].label]) for i in val]
    listing.write_text("file,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    shutil.copytree(data, tmp_path / "images")  # the images beside the CSV, as the CSV layout expects
    out = tmp_path / "predictions.csv"
    result = cli("predict", "--model", str(folder / "best_model.safetensors"), "--data", str(listing),
                     "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    recorded = recorded_val_accuracy(folder)
    assert report["images"] == len(val) and report["skipped"] == []
    assert round(report["accuracy"] * len(val)) == round(recorded * len(val)), (report["accuracy"], recorded)
    table = list(csv.reader(out.open()))
    assert table[0] == ["id", "predicted", *(f"prob_{d}" for d in range(10))]
    assert [r[0] for r in table[1:]] == [f for f, _c in rows]
    probs = np.array([[float(p) for p in r[2:]] for r in table[1:]])
    assert np.allclose(probs.sum(1), 1, atol=1e-4) and [r[1] for r in table[1:]] == [str(p) for p in probs.argmax(1)]
    correct = sum(r[1] == c for r, (_f, c) in zip(table[1:], rows, strict=True))
    assert correct == round(recorded * len(val))


def test_a_folder_with_broken_files_is_predicted_and_they_are_listed(swept: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    folder, data = swept
    loose = tmp_path / "loose"
    (loose / "deep").mkdir(parents=True)
    shutil.copy(data / "3" / "3_0.png", loose / "a.png")
    shutil.copy(data / "7" / "7_1.png", loose / "deep" / "b.png")
    write_png(loose / "deep" / "c.jpg", 200, size=(40, 30))
    (loose / "empty.png").write_bytes(b"")
    (loose / "fake.jpg").write_bytes(b"not a jpeg")
    (loose / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "p.csv"
    result = cli("predict", "--model", str(folder / "best_model.safetensors"), "--data", str(loose),
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "predicted 3 image(s)" in result.stdout and "accuracy" not in result.stdout  # no class folders
    assert "skipped 2 unreadable or missing image(s): empty.png (empty); fake.jpg (not an image)" in result.stdout
    assert [r[0] for r in csv.reader(out.open())][1:] == ["a.png", "deep/b.png", "deep/c.jpg"]
    # An ImageFolder tree of the package's classes: accuracy against its folder names is printed.
    tree = cli("predict", "--model", str(folder / "best_model.safetensors"), "--data", str(data),
                   "--out", str(out))
    assert tree.returncode == 0 and "accuracy against the folder/CSV labels" in tree.stdout


def test_bad_input_is_one_line_and_writes_nothing(swept: tuple[Path, Path], tmp_path: Path) -> None:
    folder, data = swept
    model = str(folder / "best_model.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"), metadata={"other": "x"})
    (tmp_path / "corrupt.safetensors").write_bytes((folder / "best_model.safetensors").read_bytes()[:300])
    torch.save({"state_dict": {}}, tmp_path / "old.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "broken.png").write_bytes(b"nope")
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "ids.csv").write_text("id\nmissing1.png\nmissing2.png\n")
    shutil.copy(data / "1" / "1_0.png", tmp_path / "ids" / "here.png")
    cases = {
        "missing": (["--model", str(tmp_path / "nope.safetensors"), "--data", str(data)], "no such file"),
        "corrupt": (["--model", str(tmp_path / "corrupt.safetensors"), "--data", str(data)], "corrupt"),
        "foreign": (["--model", str(tmp_path / "foreign.safetensors"), "--data", str(data)], "not a tui-hpo package"),
        "old_pt": (["--model", str(tmp_path / "old.pt"), "--data", str(data)], "not a safetensors file"),
        "no_images": (["--model", model, "--data", str(tmp_path / "empty")], "no readable images found"),
        "all_missing": (["--model", model, "--data", str(tmp_path / "ids" / "ids.csv")], "missing1.png (missing)"),
        "bad_device": (["--model", model, "--data", str(data), "--device", "gpu"], "--device"),
    }
    out = tmp_path / "out.csv"
    for name, (args, said) in cases.items():
        result = cli("predict", *args, "--out", str(out))
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tui-hpo: error: ") and said in lines[0], (name, lines)
        assert not out.exists(), name
    # Missing images among readable ones are skipped and listed, not fatal.
    (tmp_path / "ids" / "ids.csv").write_text("id\nmissing1.png\nhere.png\n")
    some = cli("predict", "--model", model, "--data", str(tmp_path / "ids" / "ids.csv"), "--out", str(out))
    assert some.returncode == 0 and "skipped 1 unreadable or missing image(s): missing1.png (missing)" in some.stdout
    assert [r[0] for r in csv.reader(out.open())][1:] == ["here.png"]


def test_tta_views_and_the_auto_choice(swept: tuple[Path, Path], tmp_path: Path) -> None:
    folder, data = swept
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    assert [len(list(views(x, p))) for p in POLICIES] == [1, 2, 5, 6]
    crops = list(views(x, "five-crop"))
    assert all(c.shape == x.shape for c in crops) and not torch.equal(crops[0], crops[3]), "other corners"
    flipped = list(views(x, "flip"))
    assert torch.equal(flipped[1][..., 0], x[..., -1]) and torch.equal(flipped[0], x)
    assert torch.equal(_zoom(x, 1.0), x) and _zoom(x, 1.1).shape == _zoom(x, 0.9).shape == x.shape
    assert torch.equal(_zoom(x, 1.1), torch.nn.functional.interpolate(x, size=(11, 11), mode="bilinear")[..., :10, :10])
    model = str(folder / "best_model.safetensors")
    evaluated = cli("evaluate", "--model", model, "--data", str(data), "--tta", "auto", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads(evaluated.stdout)["results"]
    assert list(results) == list(POLICIES) and all(0 <= r["accuracy"] <= 1 for r in results.values())
    assert len({r["accuracy"] for r in results.values()}) > 1, "the policies see different images"
    best = max(POLICIES, key=lambda p: (results[p]["accuracy"], -POLICIES.index(p)))
    auto = cli("predict", "--model", model, "--data", str(data), "--tta", "auto", "--val", str(data),
                   "--out", str(tmp_path / "p.csv"), "--json")
    assert auto.returncode == 0, auto.stderr
    report = json.loads(auto.stdout)
    assert report["tta"] == best and report["tta_auto"] == results
    # On the same images, the chosen policy's predictions score what evaluate said.
    assert report["accuracy"] == pytest.approx(results[best]["accuracy"])


def test_train_out_writes_a_package_predict_reads(swept: tuple[Path, Path], tmp_path: Path) -> None:
    folder, data = swept
    out = tmp_path / "model.safetensors"
    trained = run_cli("train", "--config", str(folder / "best_config.yaml"), "--out", str(out), "--json")
    assert trained.returncode == 0, trained.stderr
    final = json.loads(trained.stdout)["final"]
    package = read_meta(out)
    assert package.metrics["val_accuracy"] == final["val_accuracy"] and package.classes == read_meta(
        folder / "best_model.safetensors").classes
    # The same recipe, seed and split as the trial: the same score, and predict reproduces it on its own split.
    assert final["val_accuracy"] == pytest.approx(recorded_val_accuracy(folder))
    auto = cli("predict", "--model", str(out), "--data", str(data), "--tta", "auto", "--out",
                   str(tmp_path / "p.csv"))
    assert auto.returncode == 0, auto.stderr
    assert f"against {final['val_accuracy']:.4f} without TTA" in auto.stdout, auto.stdout


def test_evaluate_on_the_packages_own_validation_split_keeps_its_result(swept: tuple[Path, Path]) -> None:
    from engine.artifacts import tta_path
    from tui_hpo.screens.analysis import read_json, tta_line

    folder, _data = swept
    best = folder / checkpoints.BEST
    result = cli("evaluate", "--model", str(best), "--tta", "auto", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["results"]) == set(POLICIES)
    assert report["results"]["none"]["accuracy"] == pytest.approx(recorded_val_accuracy(folder), abs=1e-6)
    kept = read_json(tta_path(best))
    assert kept is not None and kept["results"] == report["results"]
    line = tta_line(kept)
    assert line is not None and line.startswith(f"TTA on the best model, {report['images']} validation images")


def test_a_batch_too_big_for_memory_is_halved_until_it_fits() -> None:
    """The batch predict starts with is a guess: out-of-memory halves it, once for the run."""
    x = torch.arange(16 * 3, dtype=torch.float32).view(16, 3)
    calls: list[int] = []

    def forward(part: torch.Tensor) -> torch.Tensor:
        calls.append(len(part))
        if len(part) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return part * 2

    chunk = [16]
    assert torch.equal(fitting(x, forward, chunk), x * 2)
    assert chunk == [4] and calls == [16, 8, 4, 4, 4, 4]
    calls.clear()
    assert torch.equal(fitting(x[:8], forward, chunk), x[:8] * 2) and calls == [4, 4], "the fitted size is kept"

    def never(part: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UserError, match="single image"):
        fitting(x, never, [2])
