"""`batch_size: auto` and `tui-hpo gpu batch`: the search for the largest batch, the safety share,
the cache, real training steps against a fake memory limit, and how a sweep's config takes the
batches found. (No GPU here: CUDA's out-of-memory error is raised by a model past a batch size.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.config import SweepConfig
from engine.datasets import defaults
from engine.datasets.scan import scan
from engine.errors import ConfigError
from engine.system import batch_sizes
from engine.system.batch_sizes import Found, largest_batch, safe_batch
from engine.system.platform import GpuInfo, PlatformInfo
from engine.training import batch_finder
from tests.conftest import run_cli


@pytest.mark.parametrize("limit_at", [16, 17, 100, 300, 1000, 4095])
def test_the_search_finds_the_largest_multiple_of_eight_that_fits(limit_at: int) -> None:
    tried: list[int] = []

    def fits(batch: int) -> bool:
        tried.append(batch)
        return batch <= limit_at

    largest, count = largest_batch(fits)
    assert largest == limit_at // 8 * 8 and count == len(tried) <= 17
    assert all(b % 8 == 0 for b in tried)


def test_the_search_halves_below_its_start_and_stops_at_its_limit() -> None:
    assert largest_batch(lambda b: b <= 5)[0] == 4
    assert largest_batch(lambda b: False)[0] == 0, "not even batch 1 fits"
    assert largest_batch(lambda b: True, limit=1000)[0] == 1000


def test_the_safety_share_rounds_down_to_a_multiple_of_eight() -> None:
    assert safe_batch(296, 0.9) == 264 and safe_batch(64, 0.95) == 56
    assert safe_batch(5, 0.8) == 4 and safe_batch(1, 0.8) == 1


class RunsOutOfMemory(nn.Module):
    """A real model whose device "runs out of memory" past a batch size, as CUDA reports it."""

    def __init__(self, inner: nn.Module, most: int) -> None:
        super().__init__()
        self.inner, self.most = inner, most

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.most:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory at batch {x.shape[0]}")
        return self.inner(x)


def test_real_training_steps_find_the_batch_and_remember_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real_build = batch_finder.build_model
    built: list[str] = []

    def limited(cfg: object, num_classes: int) -> nn.Module:
        built.append(cfg.model)  # type: ignore[attr-defined]
        return RunsOutOfMemory(real_build(cfg, num_classes), most=40)

    monkeypatch.setattr(batch_finder, "build_model", limited)
    found, cached = batch_finder.find_batch("test_resnet", 16, "cpu", "off", False, safety=0.8)
    assert (found.largest, found.batch, cached) == (40, 32, False)
    again, cached = batch_finder.find_batch("test_resnet", 16, "cpu", "off", False, safety=0.8)
    assert again == found and cached and built == ["test_resnet"], "remembered: no second measurement"
    _fresh, cached = batch_finder.find_batch("test_resnet", 16, "cpu", "off", False, safety=0.8, fresh=True)
    assert not cached and len(built) == 2
    batch_finder.find_batch("test_resnet", 32, "cpu", "off", False, safety=0.8)
    assert len(built) == 3, "another image size is another key"
    assert json.loads((tmp_path / "tui-hpo" / "batch_sizes.json").read_text())


def test_a_sweep_config_takes_one_batch_per_model() -> None:
    config = SweepConfig.model_validate({
        "train": {"batch_size": "auto", "image_size": 16, "augment": 0, "hflip": False},
        "resources": {"device": "cuda"},
        "search_space": {"model": {"choices": ["test_resnet", "test_efficientnet"]}}})
    notes = defaults.apply(config, scan(config.data), lambda c: {"test_resnet": 128, "test_efficientnet": 96})
    assert config.train.batch_size == 128  # the config's own model (test_resnet)
    spec = config.search_space["batch_size"]
    assert spec.choices == [128] and {m: c.choices for m, c in spec.by["model"].items()} == {
        "test_resnet": [128], "test_efficientnet": [96]}
    assert notes[0] == ("train.batch_size auto: test_resnet 128, test_efficientnet 96 (the largest that fits on "
                        "this GPU, by real training steps)")
    # 1,438 training digits: a batch of 4,000 would leave less than one step an epoch
    huge = SweepConfig.model_validate({"train": {"batch_size": "auto", "image_size": 16, "augment": 0,
                                                 "hflip": False}, "resources": {"device": "cuda"}})
    notes = defaults.apply(huge, scan(huge.data), lambda c: {"test_resnet": 4000})
    assert huge.train.batch_size == 1438 // 8 and "so an epoch of 1438 images keeps 8 steps" in notes[0]
    cpu = SweepConfig.model_validate({"train": {"batch_size": "auto", "image_size": 16, "augment": 0,
                                                "hflip": False}, "resources": {"device": "cpu"}})
    assert "no GPU memory to measure on cpu" in defaults.apply(cpu, scan(cpu.data))[0]
    assert cpu.train.batch_size == defaults.AUTO_BATCH_PLATFORM["cpu"]


def test_auto_and_a_searched_batch_size_conflict() -> None:
    from engine import config as cfg

    with pytest.raises(ConfigError, match=r"train\.batch_size: auto finds one batch per model"):
        cfg.validate({"train": {"batch_size": "auto"}, "search_space": {"batch_size": {"choices": [32, 64]}}}, None)


def h200() -> PlatformInfo:
    gpu = GpuInfo(index=0, name="NVIDIA H200", total_mb=143_000, free_mb=140_000, compute_capability="9.0", bf16=True)
    return PlatformInfo(os="Linux", hostname="h", python="3.12", versions={}, cpu_model="cpu", physical_cores=16,
                        logical_cores=16, ram_total_gb=128, ram_available_gb=120, cuda_available=True,
                        cuda_version="13.0", driver_version="580", gpus=[gpu], platform="cuda")


def test_the_engine_measures_only_what_its_cache_lacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.sweep import auto_batch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = SweepConfig.model_validate({"train": {"image_size": 224, "augment": 0, "hflip": False},
                                         "resources": {"amp": "bf16", "channels_last": True},
                                         "search_space": {"model": {"choices": ["resnet18", "efficientnet_b0"]}}})
    key = batch_sizes.cache_key("NVIDIA H200", "resnet18", 224, "bf16", True, auto_batch._torch_version())
    batch_sizes.remember(key, Found(largest=2048, batch=1944, safety=0.95, peak_mb=9e4, total_mb=143_000, tried=9))
    calls: list[list[str]] = []

    def child(args: list[str], **_kwargs: object) -> subprocess.CompletedProcess:
        calls.append(args)
        out = {"efficientnet_b0": {"batch": 1216, "largest": 1280}}
        return subprocess.CompletedProcess(args, 0, json.dumps(out), "")

    monkeypatch.setattr(auto_batch.subprocess, "run", child)
    assert auto_batch.measure_batches(config, h200()) == {"resnet18": 1944, "efficientnet_b0": 1216}
    [args] = calls
    assert args[args.index("--models") + 1] == "efficientnet_b0" and "--channels-last" in args
    assert args[args.index("--device") + 1] == "cuda:0" and args[args.index("--amp") + 1] == "bf16"

    def fails(args: list[str], **_kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args, 1, "", "efficientnet_b0: does not train even at batch 1\n")

    monkeypatch.setattr(auto_batch.subprocess, "run", fails)
    with pytest.raises(ConfigError, match=r"train\.batch_size: auto: measuring the batch failed: efficientnet_b0"):
        auto_batch.measure_batches(config, h200())


def test_gpu_batch_without_a_gpu_is_one_line() -> None:
    result = run_cli("gpu", "batch", "--model", "resnet18")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("tui-hpo: error: --device: no CUDA GPU here: the batch finder measures GPU "
                                     "memory (on this machine batch_size: auto uses the platform's usual batch)")
