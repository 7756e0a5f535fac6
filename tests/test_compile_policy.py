"""`resources.compile: auto`: the decision from measured costs (fake measurements: the same code
decides on a GPU), what a finished fold measures, and the table that keeps it across sweeps. A
real sweep deciding on the CPU: tests/test_sweep.py::test_sweep_trains_records_exports_and_reproduces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.config import SweepConfig
from engine.sweep.compile_policy import ASSUMED_COMPILE_S, ASSUMED_GAIN, Speeds, decide, measure, shape_key
from tests.conftest import ROOT

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
WHAT = "resnet18 at 64 px, batch 192"


@dataclass
class Epoch:
    samples_per_s: float
    seconds: float


def test_an_explicit_setting_always_wins() -> None:
    paying = Speeds(eager_step_s=1.0, compiled_step_s=0.1, compile_s=1.0)
    assert decide(False, paying, 10_000, WHAT).compile is False
    assert decide(True, Speeds(), 1, WHAT).compile is True


def test_short_trials_never_wait_for_a_compile() -> None:
    """The H200 quick sweep: seconds of training never buy a minute of compiling."""
    first = decide("auto", Speeds(), 600, WHAT)
    assert not first.compile and "first trial runs eager" in first.reason
    short = decide("auto", Speeds(eager_step_s=0.01), 600, WHAT)
    assert not short.compile and "6 s of training" in short.reason


def test_a_long_trial_measures_once_then_measurements_decide() -> None:
    steps = int(ASSUMED_COMPILE_S / ASSUMED_GAIN / 0.05) + 100  # long enough to repay a typical compile
    tried = decide("auto", Speeds(eager_step_s=0.05), steps, WHAT)
    assert tried.compile and "measuring" in tried.reason
    pays = decide("auto", Speeds(eager_step_s=0.05, compiled_step_s=0.03, compile_s=40), steps, WHAT)
    assert pays.compile and "40 s to compile, saves" in pays.reason
    slower = decide("auto", Speeds(eager_step_s=0.05, compiled_step_s=0.06, compile_s=40), steps, WHAT)
    assert not slower.compile and "runs no faster compiled" in slower.reason
    too_dear = decide("auto", Speeds(eager_step_s=0.05, compiled_step_s=0.049, compile_s=400), steps, WHAT)
    assert not too_dear.compile and "would save" in too_dear.reason


def test_a_fold_measures_its_steady_step_and_the_compile_cost() -> None:
    eager = measure([Epoch(1000, 9.0), Epoch(4000, 2.0), Epoch(4000, 2.2)], 100, 50, False, Speeds())
    assert eager == {"eager_step_s": pytest.approx(0.025)}
    compiled = measure([Epoch(100, 60.0), Epoch(5000, 1.5), Epoch(5000, 1.7)], 100, 50, True, Speeds())
    assert compiled == {"compiled_step_s": pytest.approx(0.02), "compile_s": pytest.approx(58.4)}
    one_epoch = measure([Epoch(100, 30.0)], 100, 50, True, Speeds(eager_step_s=0.1))
    assert one_epoch == {"compile_s": pytest.approx(25.0)}, "compile cost over the eager estimate"
    assert measure([Epoch(100, 30.0)], 100, 50, True, Speeds()) == {}, "nothing to tell cost from step"


def test_measurements_are_kept_per_shape_and_merged(tmp_path: Path) -> None:
    from engine.storage import Store, default_url

    store = Store(default_url(tmp_path))
    store.migrate()
    key = shape_key("NVIDIA H200", "resnet18", 64, 192, "bf16", True, "2.11.0")
    assert store.shape(key) == {}
    store.record_shape(key, eager_step_s=0.01)
    store.record_shape(key, compiled_step_s=0.008, compile_s=50.0)
    assert store.shape(key) == {"eager_step_s": 0.01, "compiled_step_s": 0.008, "compile_s": 50.0,
                                "fitted_batch": None}
    other = shape_key("NVIDIA H200", "resnet18", 64, 96, "bf16", True, "2.11.0")
    assert store.shape(other) == {}, "another batch is another shape"


def test_the_cuda_profile_leaves_compile_to_measurements() -> None:
    from engine.system.platform import profile
    from tests.test_workers import machine

    assert profile(machine([40_000]), "cuda")["resources"]["compile"] == "auto"
    SweepConfig.model_validate({"resources": {"compile": "auto"}})
