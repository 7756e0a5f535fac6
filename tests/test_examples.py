"""The example sweeps of configs/examples/ run for real, as a user runs them: each trains its
script's MLP on the digits and reaches an accuracy far above chance (0.1), the W&B file gives
the script the same flags as the native one, and the team-style trainer gets its parameters
through its YAML config and its environment and is scored from its own results file.

The three sweeps (2 trials of 5 epochs each) run at once from one fixture, on a copy of the
folder (prepare_data.py writes its CSV files there, not into the repository). That is about 50
CPU-seconds, 45-60 s on two cores shared with other work: each sweep's engine and worker start
(~6 CPU-s) and each trial's `import torch` (~2.5 CPU-s) are most of it; the training is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from engine.config.layers import SEED_HABITS
from engine.storage import default_url
from tests.conftest import ROOT

pytestmark = pytest.mark.xdist_group("test_examples")
EXAMPLES = ROOT / "configs" / "examples"
SWEEPS = ("digits", "digits_wandb", "trainer_sweep")
TRIALS, EPOCHS, SEED = 2, 5, 0
GOOD = 0.8  # accuracy and macro-F1 on 359 validation digits; chance is 0.1


@dataclass
class Run:
    folder: Path  # the trials' folders: <workdir>/<study>/trials/<n>/
    study: optuna.Study
    output: str

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return sorted(self.study.trials, key=lambda t: t.number)

    def log(self, number: int) -> str:
        return (self.folder / "trials" / str(number) / "output.log").read_text()

    def logged(self, number: int, prefix: str) -> dict[str, Any]:
        """The JSON after `prefix` on the line the script printed it (its parsed arguments)."""
        line = next(line for line in self.log(number).splitlines() if line.startswith(prefix))
        return json.loads(line.removeprefix(prefix))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("examples")
    examples = shutil.copytree(EXAMPLES, root / "examples", ignore=shutil.ignore_patterns("data", "__pycache__"))
    subprocess.run([sys.executable, str(examples / "prepare_data.py")], check=True, capture_output=True)
    # Fewer epochs and a fixed sampler seed from the environment, as a user would shorten a run;
    # the caller's own TUI_HPO__ variables and SEED-like habits do not leak in
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__") and k not in SEED_HABITS}
    env |= {"TUI_HPO__TRAIN__EPOCHS": str(EPOCHS), "TUI_HPO__SAMPLER__SEED": str(SEED), "COLUMNS": "120"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "tui_hpo.cli", "run", "--config",
                                     str(examples / f"{name}.yaml"), "--workdir", str(root / name), "--no-tui",
                                     "--n-trials", str(TRIALS)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
             for name in SWEEPS}
    out = {}
    try:
        for name, proc in procs.items():
            output, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, output
            study = optuna.load_study(study_name=name, storage=default_url(root / name))
            out[name] = Run(root / name / name, study, output)
    finally:
        for proc in procs.values():  # a sweep that failed or hung does not outlive the test
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    return out


def trained(run: Run) -> list[optuna.trial.FrozenTrial]:
    """The sweep's trials, each complete, the best far above chance."""
    trials = run.trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS, run.output
    assert max(t.value for t in trials) > GOOD
    return trials


def test_native_sweep_trains_the_script(runs: dict[str, Run]) -> None:
    """digits.yaml: the script's flags come from the file, its JSON lines are each trial's
    epochs (reported to the pruner), and its last val_accuracy is the trial's value."""
    run = runs["digits"]
    for t in trained(run):
        args = run.logged(t.number, "hyperparameters: ")
        assert {k: args[k] for k in t.params} == t.params
        assert args["epochs"] == EPOCHS  # train.epochs from the environment reached the script as --epochs
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))
        last = json.loads(run.log(t.number).strip().splitlines()[-1])
        assert t.value == pytest.approx(last["val_accuracy"])


def test_wandb_file_gives_the_script_the_same_flags(runs: dict[str, Run]) -> None:
    """digits_wandb.yaml and digits.yaml describe one sweep: with the same sampler seed, each
    trial's script gets the same arguments in the same order, and trains as well."""
    native, wandb = runs["digits"], runs["digits_wandb"]
    for a, b in zip(native.trials(), trained(wandb), strict=True):
        assert a.params == b.params
        assert native.logged(a.number, "hyperparameters: ") == wandb.logged(b.number, "hyperparameters: ")
        flags = [t.user_attrs["command"][t.user_attrs["command"].index("train_digits.py") + 1:] for t in (a, b)]
        assert flags[0] == flags[1]
        assert flags[0][0] == f"--epochs={EPOCHS}"
    assert wandb.trials()[0].user_attrs["command"][0] == "/usr/bin/env"  # ${env}, as `wandb agent` runs it


def test_batch_sizes_reach_the_script_as_written(runs: dict[str, Run]) -> None:
    """The program's own batch_size is its own: the file lists 32, 64 and 128, and a trial runs
    one of them (the platform profile's batch multiplier is for the built-in trainer)."""
    for name in ("digits", "digits_wandb"):
        for t in runs[name].trials():
            assert runs[name].logged(t.number, "hyperparameters: ")["batch_size"] in (32, 64, 128), name


def test_trainer_gets_config_and_environment_and_is_scored_from_its_results(runs: dict[str, Run]) -> None:
    """trainer_sweep.yaml: the dotted parameters arrive nested in the {config} YAML, lr, batch
    size, seed and epochs through LEARNING_RATE/BATCH_SIZE/SEED/EPOCHS, and each trial's value
    is best_metrics.val_f1 of the results file in its own folder (two trials at a time)."""
    run = runs["trainer_sweep"]
    for t in trained(run):
        cfg = run.logged(t.number, "config: ")
        assert cfg["model"]["hidden"] == t.params["model.hidden"]
        assert cfg["optimizer"] == {"momentum": t.params["optimizer.momentum"],
                                    "weight_decay": t.params["optimizer.weight_decay"]}
        assert cfg["training"] == {"lr": t.params["lr"], "batch_size": t.params["batch_size"], "seed": 42,
                                   "epochs": EPOCHS}
        results = json.loads((run.folder / "trials" / str(t.number) / "results" / "training_results.json").read_text())
        assert t.value == pytest.approx(results["best_metrics"]["val_f1"])
        assert t.user_attrs["metrics"]["best_metrics.val_accuracy"] > GOOD
