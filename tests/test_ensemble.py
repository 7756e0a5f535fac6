"""Top-K ensembles and the final model: `tui-hpo ensemble` over a real sweep's kept checkpoints,
predict with the ensemble package reproducing the ensemble's validation figures, and `train
--full` on training and validation images together."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from engine.config import DataConfig
from engine.datasets.scan import labels_of, load_digits, scan, splits
from engine.sweep import checkpoints
from engine.training.package import read_meta
from tests.conftest import ROOT, run_cli, write_png
from tests.conftest import invoke as cli

pytestmark = pytest.mark.xdist_group("test_ensemble")
PER_CLASS = 30


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the workspace, the data folder) of a finished 4-trial sweep that kept 3 checkpoints, on
    digits written out as PNG files (predict reads files)."""
    from PIL import Image

    base = tmp_path_factory.mktemp("ensemble")
    data = base / "digits"
    pixels, labels = load_digits()
    for c in range(10):
        (data / str(c)).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(labels == c)[:PER_CLASS]):
            Image.fromarray(pixels[i]).save(data / str(c) / f"{c}_{k}.png")
    config = base / "tiny.yaml"
    config.write_text(f"name: tiny\ndata: {{path: {data}}}\ntrain: {{model: test_resnet, epochs: 2, image_size: 16}}\n"
                      "search_space:\n  lr: {choices: [3.0e-3, 1.0e-2]}\n"
                      "  image_size: {choices: [16, 24]}\n"  # any top three read the images at both sizes
                      "sampler: {name: grid, seed: 0}\npruner: {name: none}\nbudget: {n_trials: 4}\n"
                      "checkpoints: {keep: 3}\nresources: {parallel: 2, batch_multiplier: 1.0}\n")
    result = run_cli("run", "--config", str(config), "--workdir", str(base / "runs"), "--no-tui")
    assert result.returncode == 0, result.stderr
    return base / "runs", data



def validation_listing(data: Path, folder: Path) -> tuple[Path, int]:
    """The sweep's validation images (cut the worker's way) as a labelled CSV beside a copy of them."""
    cfg = DataConfig(path=str(data))
    found = scan(cfg)
    _train, val = splits(labels_of(found), cfg)[0]
    listing = folder / "val.csv"
    rows = [(found.entries[i].path.relative_to(data).as_posix(), found.classes[found.entries[i].label]) for i in val]
    listing.write_text("file,label\n" + "".join(f"{f},{c}\n" for f, c in rows))
    shutil.copytree(data, folder / "images")
    return listing, len(val)


def probabilities_of(predictions: Path) -> np.ndarray:
    rows = list(csv.reader(predictions.open()))[1:]
    return np.array([[float(p) for p in row[2:]] for row in rows])


def test_the_top_three_ensemble_and_predict_with_it(swept: tuple[Path, Path], tmp_path: Path) -> None:
    workdir, data = swept
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'hpo.db'}")
    best_three = sorted(study.trials, key=lambda t: t.value, reverse=True)[:3]
    result = cli("ensemble", "--workdir", str(workdir), "--top", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [m["trial"] for m in report["members"]] == [t.number for t in best_three]
    # Each member measured as the worker measured it: its F1 is its trial's value.
    for member, trial in zip(report["members"], best_three, strict=True):
        assert member["macro_f1"] == pytest.approx(trial.value, abs=1e-6) and member["weight"] == 1.0
    assert report["best_single"]["trial"] == study.best_trial.number
    package = Path(report["package"])
    assert package == workdir / "tiny" / "ensemble" and len(list(package.glob("member-*.safetensors"))) == 3
    manifest = json.loads((package / "ensemble.json").read_text())
    assert manifest["method"] == "mean" and manifest["metrics"]["ensemble"] == report["ensemble"]
    assert {read_meta(package / m["file"]).image_size for m in manifest["members"]} == {16, 24}
    # The Analysis screen's line about it
    from tui_hpo.screens.analysis import ensemble_line, read_json

    line = ensemble_line(read_json(workdir / "tiny" / "ensemble" / "ensemble.json"))
    assert line is not None and line.startswith("top-3 ensemble (mean): macro-F1 ")
    assert f"(trial {study.best_trial.number})" in line
    # predict with the package reproduces the ensemble's validation accuracy exactly
    listing, n_val = validation_listing(data, tmp_path)
    predicted = cli("predict", "--model", str(package), "--data", str(listing), "--out", str(tmp_path / "p.csv"),
                    "--json")
    assert predicted.returncode == 0, predicted.stderr
    said = json.loads(predicted.stdout)
    assert said["members"] == 3 and said["images"] == n_val == report["validation_images"]
    assert round(said["accuracy"] * n_val) == round(report["ensemble"]["accuracy"] * n_val)
    # ... and its probabilities are the mean of each member's own predictions (each at its own size)
    alone = []
    for i, member in enumerate(manifest["members"]):
        out = tmp_path / f"m{i}.csv"
        assert cli("predict", "--model", str(package / member["file"]), "--data", str(listing),
                   "--out", str(out)).returncode == 0
        alone.append(probabilities_of(out))
    assert np.allclose(probabilities_of(tmp_path / "p.csv"), np.mean(alone, axis=0), atol=2e-6)
    text = cli("ensemble", "--workdir", str(workdir), "--top", "3", "--method", "weighted",
               "--out", str(tmp_path / "weighted"))
    assert "the ensemble's macro-F1" in text.stdout and "best single model's (trial" in text.stdout
    weights = [m["weight"] for m in json.loads((tmp_path / "weighted" / "ensemble.json").read_text())["members"]]
    assert weights == pytest.approx([t.value for t in best_three], abs=1e-6)


def test_more_members_than_kept_checkpoints_says_so(swept: tuple[Path, Path], tmp_path: Path) -> None:
    workdir, _data = swept
    result = cli("ensemble", "--workdir", str(workdir), "--top", "4", "--out", str(tmp_path / "e"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["members"]) == 3
    assert report["notes"] == ["only 3 of the best 4 trials kept their weights (checkpoints.keep): set "
                               "checkpoints.keep: 4 for a full top-4 ensemble"]
    lonely = tmp_path / "runs"
    shutil.copytree(workdir, lonely)
    shutil.rmtree(lonely / "tiny" / "ensemble", ignore_errors=True)  # another test's
    for kept in sorted((lonely / "tiny" / "checkpoints").glob("trial_*.safetensors"))[1:]:
        kept.unlink()
    refused = run_cli("ensemble", "--workdir", str(lonely), "--top", "3")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "tui-hpo: error: --top: needs the kept weights of two of the best 3 trials, found 1: set checkpoints.keep: "
        "3 in the config and run the sweep again")
    assert not (lonely / "tiny" / "ensemble").exists()


def test_train_full_trains_on_training_and_validation_images(swept: tuple[Path, Path], tmp_path: Path) -> None:
    workdir, _data = swept
    out = tmp_path / "final.safetensors"
    result = run_cli("train", "--config", str(workdir / "tiny" / "best_config.yaml"), "--full", "--epochs", "1",
                     "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["full"] and report["train_images"] == 10 * PER_CLASS and len(report["epochs"]) == 1
    assert read_meta(out).meta["full"] is True  # (without --full, 20% of the images are held out)


def test_members_combine_by_their_weights() -> None:
    from engine.training.ensemble import combine, member_weights

    a, b = np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([[0.2, 0.8], [0.0, 1.0]])
    assert np.allclose(combine([a, b], [1.0, 3.0]), (a + 3 * b) / 4)
    assert np.allclose(combine([a, b], member_weights("mean", [0.9, 0.1])), (a + b) / 2)
    assert member_weights("weighted", [0.9, -0.1]) == [0.9, 0.0]


def test_a_k_fold_trial_ensembles_its_folds_measured_on_the_test_set(tmp_path: Path) -> None:
    """A 3-fold sweep keeps each fold's model with its checkpoint; `ensemble --folds` measures each
    on the fold it never trained on and the ensemble on data.test, which predict reproduces."""
    for part, (start, n) in {"train": (0, 12), "test": (100, 3)}.items():
        for i in range(start, start + n):
            write_png(tmp_path / part / "dark" / f"d{i}.png", 40 + i % 7)
            write_png(tmp_path / part / "bright" / f"b{i}.png", 210 - i % 7)
    workdir = tmp_path / "runs"
    env = {"TUI_HPO__SEARCH_SPACE__BATCH_SIZE": "null", "TUI_HPO__TRAIN__BATCH_SIZE": "8",
           "TUI_HPO__DATA__FOLDS": "3"}
    result = run_cli("run", "--config", str(ROOT / "tests" / "configs" / "tiny.yaml"), "--train-data",
                     str(tmp_path / "train"), "--test-data", str(tmp_path / "test"), "--workdir", str(workdir),
                     "--no-tui", "--n-trials", "1", env=env, timeout=240)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'hpo.db'}")
    best = study.best_trial.number
    folder = workdir / "tiny"
    assert sorted(p.name for p in (folder / "checkpoints").glob("*.safetensors")) == [
        f"trial_{best}.fold_0.safetensors", f"trial_{best}.fold_1.safetensors", f"trial_{best}.safetensors"]

    report = json.loads(cli("ensemble", "--workdir", str(workdir), "--folds", "--json").stdout)
    assert report["kind"] == "folds" and [(m["trial"], m["fold"]) for m in report["members"]] == [
        (best, 0), (best, 1), (best, 2)]
    # Each member on its own fold, as the worker validated it: their mean is the trial's value.
    assert np.mean([m["macro_f1"] for m in report["members"]]) == pytest.approx(study.best_value, abs=1e-6)
    assert report["validation_images"] == 24 and report["ensemble"] is None and "out_of_fold" in report
    assert report["test"]["images"] == 6 and len(report["test"]["members"]) == 3
    # predict with the fold ensemble on the test images reproduces its test accuracy
    out = tmp_path / "p.csv"
    said = json.loads(cli("predict", "--model", report["package"], "--data", str(tmp_path / "test"), "--out",
                          str(out), "--json").stdout)
    assert said["members"] == 3 and said["images"] == 6
    assert round(said["accuracy"] * 6) == round(report["test"]["ensemble"]["accuracy"] * 6)
    from tui_hpo.screens.analysis import ensemble_line, read_json

    line = ensemble_line(read_json(Path(report["package"]) / "ensemble.json"))
    assert line is not None and line.startswith(f"3-fold ensemble of trial {best} (mean): out-of-fold macro-F1 ")
    assert line.endswith(f"on 6 test images, best member {max(m['macro_f1'] for m in report['test']['members']):.4f}")
    shown = cli("ensemble", "--workdir", str(workdir), "--folds", "--out", str(tmp_path / "e"))
    text = " ".join(shown.stdout.split())
    assert "out-of-fold" in text and "than the best member's (fold " in text and "on the same 6 test images" in text

    refused = cli("ensemble", "--workdir", str(workdir), "--trial", str(best))
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "tui-hpo: error: --trial: --trial picks the trial whose folds to combine: add --folds")
    refused = cli("ensemble", "--workdir", str(workdir), "--folds", "--trial", "5")
    assert refused.returncode == 2 and "trial 5 kept no fold models" in refused.stderr


def test_a_trials_fold_files_are_kept_counted_and_removed_with_its_checkpoint(tmp_path: Path) -> None:
    values = {0: 0.5, 1: 0.9, 2: 0.7}
    for n in values:  # keep 2: trial 0 is kept, then pushed out by trial 2
        checkpoints.save(tmp_path, n, lambda: [bytes(100)] * 3, lambda numbers: {k: values[k] for k in numbers},
                         True, 2, None)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.safetensors")) == [
        "trial_1.fold_0.safetensors", "trial_1.fold_1.safetensors", "trial_1.safetensors",
        "trial_2.fold_0.safetensors", "trial_2.fold_1.safetensors", "trial_2.safetensors"]
    assert checkpoints.sizes(tmp_path, checkpoints.on_disk(tmp_path)) == {1: 300, 2: 300}
    # A budget of 500 bytes fits one trial's three files, not two
    removed = checkpoints.trim(tmp_path, values, True, 2, 500 / 1024 / 1024)
    assert sorted(p.name for p in removed) == ["trial_2.fold_0.safetensors", "trial_2.fold_1.safetensors",
                                               "trial_2.safetensors"]
    (tmp_path / "checkpoints" / "trial_7.fold_0.safetensors").write_bytes(b"orphan of a crash")
    assert [p.name for p in checkpoints.trim(tmp_path, values, True, 2, None)] == ["trial_7.fold_0.safetensors"]
