"""`tui-hpo gpu check`: every card as NVML reports it, advice per memory class and per feature,
and the profile that follows. A fake NVML (two unlike cards) drives the real code in-process;
the real command runs on this machine, which has no GPU and must say so."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from engine.system import nvml, platform
from engine.system.gpu_classes import advice, memory_class
from engine.system.platform import GpuInfo
from tests.conftest import run_cli

GB = 2**30


class FakeNvml:
    """pynvml's calls as the check makes them, for an H200 and a hot RTX 3080 on a narrow link."""

    CARDS = [
        {"name": "NVIDIA H200", "total": 141 * GB, "used": 1 * GB, "cc": (9, 0), "temp": 41, "power": 120_000,
         "limit": 700_000, "gen": 5, "width": 16, "links": 18},
        {"name": "NVIDIA GeForce RTX 3080", "total": 10 * GB, "used": 2 * GB, "cc": (8, 6), "temp": 86,
         "power": 318_000, "limit": 320_000, "gen": 4, "width": 8, "links": 0},
    ]

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)  # a call this fake does not know fails as an old driver's would

    def nvmlDeviceGetCount(self) -> int:
        return len(self.CARDS)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return self.CARDS[index]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.65"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 13000

    def nvmlDeviceGetName(self, card: dict) -> bytes:
        return card["name"].encode()

    def nvmlDeviceGetUUID(self, card: dict) -> str:
        return f"GPU-{card['name'][-4:]}"

    def nvmlDeviceGetUtilizationRates(self, card: dict) -> SimpleNamespace:
        return SimpleNamespace(gpu=3)

    def nvmlDeviceGetMemoryInfo(self, card: dict) -> SimpleNamespace:
        return SimpleNamespace(used=card["used"], total=card["total"])

    def nvmlDeviceGetTemperature(self, card: dict, sensor: int) -> int:
        return card["temp"]

    def nvmlDeviceGetPowerUsage(self, card: dict) -> int:
        return card["power"]

    def nvmlDeviceGetEnforcedPowerLimit(self, card: dict) -> int:
        return card["limit"]

    def nvmlDeviceGetCudaComputeCapability(self, card: dict) -> tuple[int, int]:
        return card["cc"]

    def nvmlDeviceGetClockInfo(self, card: dict, clock: int) -> int:
        return 1980 if clock == 1 else 3201

    def nvmlDeviceGetMaxClockInfo(self, card: dict, clock: int) -> int:
        return 1980

    def nvmlDeviceGetCurrPcieLinkGeneration(self, card: dict) -> int:
        return card["gen"]

    def nvmlDeviceGetMaxPcieLinkGeneration(self, card: dict) -> int:
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, card: dict) -> int:
        return card["width"]

    def nvmlDeviceGetMaxPcieLinkWidth(self, card: dict) -> int:
        return 16

    def nvmlDeviceGetNvLinkState(self, card: dict, link: int) -> int:
        if link >= card["links"]:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 1

    def nvmlDeviceGetTopologyCommonAncestor(self, a: dict, b: dict) -> int:
        return 30  # NVML_TOPOLOGY_HOSTBRIDGE


@pytest.fixture
def two_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "_state", {"tried": True, "ok": True, "module": FakeNvml()})
    monkeypatch.setattr(platform, "torch_cuda_build", lambda: (True, "13.0"))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # unlike cards: NVML's order is CUDA's
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    from engine.training import devices

    monkeypatch.setattr(devices, "cuda_problem", lambda: None)


def test_every_card_with_its_class_features_state_and_advice(two_cards: None) -> None:
    from tui_hpo.cli import main

    result = CliRunner().invoke(main, ["gpu", "check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["platform"], report["driver"], report["cuda_driver"]) == ("cuda", "580.65", "13.0")
    h200, rtx = report["gpus"]
    assert (h200["memory_class"], rtx["memory_class"]) == ("80 GB+", "up to 12 GB")
    assert h200["tf32"] and h200["bf16"] and h200["nvlinks_active"] == 18 and rtx["nvlinks_active"] is None
    assert (h200["power_limit_w"], rtx["pcie_width"], rtx["pcie_max_width"]) == (700, 8, 16)
    assert any("pack trials" in line for line in h200["advice"])
    assert not any("PCIe" in line or "hot" in line for line in h200["advice"]), "a healthy card gets no warning"
    assert any("x8 of x16" in line for line in rtx["advice"]) and any("running hot (86 C)" in line
                                                                       for line in rtx["advice"])
    assert any("power limit" in line for line in rtx["advice"])
    assert report["topology"] == [{"gpus": [0, 1], "link": "one host bridge"}]
    # The profile plans for the smallest card: the sweep's trials may land on either.
    assert report["profile"]["batch_multiplier"] == 0.5 and report["profile"]["trials_per_gpu"] == 1
    assert any("the up to 12 GB class (the smallest of 2 GPUs)" in line for line in report["why"])
    text = CliRunner().invoke(main, ["gpu", "check"], terminal_width=120).output
    assert "GPU 0: NVIDIA H200" in text and "GPU 1: NVIDIA GeForce RTX 3080" in text and "one host bridge" in text


@pytest.mark.parametrize(("gb", "klass"), [(8, "up to 12 GB"), (12, "up to 12 GB"), (16, "16-24 GB"),
                                           (24, "16-24 GB"), (48, "32-48 GB"), (80, "80 GB+"), (141, "80 GB+")])
def test_memory_classes_follow_the_cards_memory(gb: float, klass: str) -> None:
    assert memory_class(gb * 1024 - 300).name == klass, "a card reports a little less than its label"


def test_precision_advice_by_compute_capability() -> None:
    def card(cc: str, bf16: bool) -> GpuInfo:
        return GpuInfo(index=0, name="card", total_mb=16_000, free_mb=None, compute_capability=cc, bf16=bf16)

    assert "bf16 mixed precision" in advice(card("8.9", True))[1]
    assert "fp16 mixed precision with a gradient scaler" in advice(card("7.5", False))[1]
    assert "no tensor cores" in advice(card("6.1", False))[1]


def test_on_this_machine_without_a_gpu_it_says_so_and_explains_the_cpu_profile() -> None:
    result = run_cli("gpu", "check")
    assert result.returncode == 0, result.stderr
    assert "platform cpu" in result.stdout and "no NVIDIA GPU" in result.stdout
    assert "single-threaded workers" in result.stdout


def test_a_benchmark_that_measured_channels_last_slower_turns_it_off(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from engine.system import benchmarks
    from engine.system.benchmarks import Benchmark, Figure, ModelBench, Variant
    from engine.system.gpu_classes import explain_profile
    from engine.system.platform import PlatformInfo, profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    card = GpuInfo(index=0, name="NVIDIA L40S", total_mb=46_000, free_mb=45_000, compute_capability="8.9", bf16=True)
    info = PlatformInfo(os="Linux", hostname="h", python="3.12", versions={}, cpu_model="cpu", physical_cores=8,
                        logical_cores=8, ram_total_gb=64, ram_available_gb=60, cuda_available=True,
                        cuda_version="13.0", driver_version="580", gpus=[card], platform="cuda")

    def measured(flipped_rates: list[float]) -> None:
        models = tuple(ModelBench(model=f"m{i}", image_size=224, batch=256, steps=20, variants=(
            Variant("baseline", False, "bf16", True, samples_per_s=1000.0),
            Variant("channels-last off", False, "bf16", False, samples_per_s=rate)))
            for i, rate in enumerate(flipped_rates))
        benchmarks.save(Benchmark(device="NVIDIA L40S", kind="cuda", date="2026-12-01", torch_version="2.11.0",
                                  matmul_tflops={}, memory_bandwidth_gbs=Figure(), host_to_device_gbs=Figure(),
                                  models=models))

    assert profile(info, "cuda")["resources"]["channels_last"] is True, "nothing measured: the default"
    measured([1300.0, 1200.0])  # contiguous faster on every model
    resources = profile(info, "cuda")["resources"]
    assert resources["channels_last"] is False
    assert any("measured channels-last slower" in line for line in explain_profile(resources, "cuda", [card]))
    measured([1300.0, 700.0])  # no clear winner: the default stays
    assert profile(info, "cuda")["resources"]["channels_last"] is True
