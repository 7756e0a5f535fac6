"""`tui-hpo gpu benchmark`: the verdicts from fake measurements (the same code speaks on a GPU),
the store, the compile decision starting from a stored benchmark, the System screen's panel, and
one real run on this machine's CPU, which must say what it cannot measure here."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.insights.gpu_verdicts import (
    amp_verdicts,
    card,
    channels_last_verdict,
    compile_verdict,
    duration,
    matmul_verdict,
    model_verdicts,
    verdicts,
)
from engine.sweep.compile_policy import ASSUMED_COMPILE_S, Prior, Speeds, decide, prior_from
from engine.system import benchmarks
from engine.system.benchmarks import Benchmark, Figure, ModelBench, Variant, plan_variants
from tests.conftest import run_cli

TORCH = "2.14.1"


def model(name: str = "resnet18", *variants: Variant) -> ModelBench:
    return ModelBench(model=name, image_size=224, batch=256, steps=20, variants=variants, memory="CUDA max allocated")


def v(name: str, rate: float | None, *, amp: str = "bf16", channels_last: bool = True, compile: bool = False,
      compile_s: float | None = None, skipped: str | None = None) -> Variant:
    return Variant(name, compile, amp, channels_last, samples_per_s=rate, peak_mem_mb=1000.0 if rate else None,
                   compile_s=compile_s, skipped=skipped)


def h200(*models: ModelBench, device: str = "NVIDIA H200", torch_version: str = TORCH) -> Benchmark:
    return Benchmark(device=device, kind="cuda", date="2026-11-20T10:00:00+00:00", torch_version=torch_version,
                     matmul_tflops={"bf16": Figure(780.0), "fp16": Figure(770.0), "tf32": Figure(400.0),
                                    "fp32": Figure(55.0)},
                     memory_bandwidth_gbs=Figure(4100.0), host_to_device_gbs=Figure(52.0), models=models)


# ----------------------------------------------------------------- verdicts from fake measurements

def test_matmul_against_the_datasheet_of_known_cards_only() -> None:
    assert matmul_verdict("NVIDIA H200", "bf16", Figure(780.0)) == \
        "matmul bf16 780 TFLOP/s: 79% of an H200's datasheet 989"
    assert matmul_verdict("NVIDIA GeForce RTX 5090", "bf16", Figure(400.0)) == "matmul bf16 400 TFLOP/s"
    assert matmul_verdict("Tesla T4", "bf16", Figure(20.0)) == "matmul bf16 20 TFLOP/s", "the T4 has no bf16 figure"
    assert "of a T4's datasheet 65" in matmul_verdict("Tesla T4", "fp16", Figure(50.0))
    assert matmul_verdict("cpu: AMD EPYC", "fp16", Figure(why_not="needs a GPU")) == \
        "matmul fp16: not measured (needs a GPU)"
    assert "TF32" in matmul_verdict("NVIDIA H200", "tf32", Figure(400.0))
    # Names that contain each other: each finds its own card, an unlisted variant none.
    assert card("NVIDIA A100-SXM4-80GB").name == "A100"
    assert card("NVIDIA A10").name == "A10"
    assert card("NVIDIA A10G") is None
    assert card("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert card("NVIDIA H100 PCIe") is None


def test_amp_verdicts_name_the_faster_precision_and_what_to_do() -> None:
    gpu = model("resnet18", v("baseline", 1800), v("amp off", 1000, amp="off"), v("amp fp16", 1700, amp="fp16"))
    assert amp_verdicts(gpu) == ["bf16 is 1.8x faster than full precision on resnet18: keep amp bf16",
                                 "fp16 is 1.7x faster than full precision on resnet18"]
    cpu = model("test_resnet", v("baseline", 500, amp="off"), v("amp bf16", 300),
                v("amp fp16", None, amp="fp16", skipped="fp16 needs a CUDA GPU"))
    assert amp_verdicts(cpu) == ["bf16 is 0.6x the speed of full precision on test_resnet: slower here, keep amp off"]
    better = model("convnext", v("baseline", 500, amp="off"), v("amp bf16", 1000))
    assert amp_verdicts(better) == ["bf16 is 2.0x faster than full precision on convnext: use amp bf16"]
    marginal = model("resnet18", v("baseline", 1000), v("amp off", 600, amp="off"), v("amp fp16", 1020, amp="fp16"))
    assert amp_verdicts(marginal) == ["bf16 is 1.7x faster than full precision on resnet18: keep amp bf16",
                                      "fp16 is 1.7x faster than full precision on resnet18"], "2% is noise"
    assert amp_verdicts(better, kind="cpu") == [
        "bf16 is 2.0x faster than full precision on convnext: but sweeps train in full precision on the CPU"]
    even = model("vit", v("baseline", 1000), v("amp off", 990, amp="off"))
    assert amp_verdicts(even) == ["bf16 runs at the speed of full precision on vit (1.01x): keep amp bf16"]


def test_compile_verdict_says_when_it_pays_or_that_it_never_does() -> None:
    base = v("baseline", 1000)
    pays = model("resnet18", base, v("compiled", 1100, compile=True, compile_s=47))
    assert compile_verdict(pays) == ("torch.compile on resnet18: 47 s to compile for a 1.1x gain: pays after "
                                     "9 minutes of training of this shape")
    slower = model("resnet18", base, v("compiled", 850, compile=True, compile_s=52))
    assert compile_verdict(slower) == ("torch.compile on resnet18: 52 s to compile and 0.85x: slower here, never "
                                       "pays: keep compile off")
    same = model("resnet18", base, v("compiled", 1010, compile=True, compile_s=52))
    assert "1.01x: no faster, never pays" in compile_verdict(same)
    skipped = model("resnet18", base, v("compiled", None, compile=True, skipped="--no-compile"))
    assert compile_verdict(skipped) == "torch.compile on resnet18: not measured (--no-compile)"
    assert duration(45) == "45 s" and duration(517) == "9 minutes" and duration(3 * 3600) == "3.0 hours"


def test_channels_last_verdict_from_either_side() -> None:
    on_by_profile = model("resnet18", v("baseline", 1000), v("channels-last off", 1111, channels_last=False))
    assert channels_last_verdict(on_by_profile) == ("channels-last is 0.9x on resnet18: slower here, turn it off "
                                                    "(resources.channels_last: false)")
    off_by_profile = model("resnet18", v("baseline", 1000, channels_last=False), v("channels-last on", 1300))
    assert channels_last_verdict(off_by_profile) == ("channels-last is 1.3x faster on resnet18: turn it on "
                                                     "(resources.channels_last: true)")
    kept = model("resnet18", v("baseline", 1300), v("channels-last off", 1000, channels_last=False))
    assert channels_last_verdict(kept) == "channels-last is 1.3x faster on resnet18: keep it on"
    even = model("resnet18", v("baseline", 1000), v("channels-last off", 1010, channels_last=False))
    assert channels_last_verdict(even) == "channels-last makes no difference on resnet18 (0.99x)"


def test_a_model_whose_baseline_failed_says_so_and_nothing_else() -> None:
    failed = model("convnext_large", v("baseline", None, skipped="failed: out of memory at batch 256"),
                   v("amp off", 10, amp="off"))
    assert model_verdicts(failed) == ["convnext_large: not measured (failed: out of memory at batch 256)"]


def test_variants_one_change_at_a_time_and_what_a_device_cannot_run() -> None:
    gpu = plan_variants("bf16", True, on_cuda=True, bf16=True, compile_why_not=None)
    assert [x.name for x in gpu] == ["baseline", "compiled", "amp off", "amp fp16", "channels-last off"]
    assert not any(x.skipped for x in gpu)
    base = gpu[0]
    for changed in gpu[1:]:  # each differs from the baseline in exactly one setting
        assert sum(getattr(changed, k) != getattr(base, k) for k in ("compile", "amp", "channels_last")) == 1
    old_gpu = {x.name: x for x in plan_variants("fp16", True, on_cuda=True, bf16=False, compile_why_not=None)}
    assert "no bf16" in old_gpu["amp bf16"].skipped
    cpu = {x.name: x for x in plan_variants("off", False, on_cuda=False, bf16=True, compile_why_not="--no-compile")}
    assert set(cpu) == {"baseline", "compiled", "amp bf16", "amp fp16", "channels-last on"}
    assert cpu["compiled"].skipped == "--no-compile" and "CUDA" in cpu["amp fp16"].skipped
    assert cpu["amp bf16"].skipped is None


# ----------------------------------------------------------------- the store

def test_the_store_keeps_each_device_and_merges_a_devices_models(tmp_path: Path) -> None:
    path = tmp_path / "gpu_benchmark.json"
    assert benchmarks.load_all(path) == {}, "no file: no benchmark"
    first = h200(model("resnet18", v("baseline", 1000)))
    benchmarks.save(first, path)
    assert benchmarks.load("NVIDIA H200", path) == first
    cpu = replace(h200(), device="cpu: AMD EPYC", kind="cpu", threads=1,
                  host_to_device_gbs=Figure(why_not="no GPU"), not_measured=("host-to-device bandwidth: no GPU",))
    benchmarks.save(cpu, path)
    assert set(benchmarks.load_all(path)) == {"NVIDIA H200", "cpu: AMD EPYC"}
    assert benchmarks.load("cpu: AMD EPYC", path) == cpu
    later = h200(model("efficientnet_b0", v("baseline", 500)), model("resnet18", v("baseline", 1200)))
    benchmarks.save(replace(later, models=later.models[:1]), path)
    assert [m.model for m in benchmarks.load("NVIDIA H200", path).models] == ["resnet18", "efficientnet_b0"]
    benchmarks.save(h200(model("vit", v("baseline", 9)), torch_version="2.15.0"), path)
    assert [m.model for m in benchmarks.load("NVIDIA H200", path).models] == ["vit"], "another torch: measured anew"
    path.write_text("{not json")
    assert benchmarks.load_all(path) == {}, "a damaged file reads as no benchmark"
    benchmarks.save(first, path)
    assert benchmarks.load("NVIDIA H200", path) == first


# ----------------------------------------------------------------- the compile decision

COMPILED = model("resnet18", v("baseline", 1000), v("compiled", 2000, compile=True, compile_s=5))


def test_a_stored_benchmark_replaces_the_assumed_compile_cost_and_gain() -> None:
    prior = prior_from(h200(COMPILED), "resnet18", TORCH)
    assert prior == Prior(compile_s=5, speedup=2.0, where="224 px, batch 256")
    step = Speeds(eager_step_s=0.01)  # 6,000 steps: 60 s of training
    assumed = decide("auto", step, 6000, "resnet18 at 64 px")
    assert not assumed.compile and f"~{ASSUMED_COMPILE_S:.0f} s to compile" in assumed.reason
    measured = decide("auto", step, 6000, "resnet18 at 64 px", prior)
    assert measured.compile, "5 s to compile at twice the speed repays in 60 s of training"
    assert "`tui-hpo gpu benchmark` measured ~5 s to compile for 2.00x at 224 px, batch 256" in measured.reason
    slower = Prior(compile_s=5, speedup=0.9, where="224 px, batch 256")
    long_trial = Speeds(eager_step_s=1.0)  # 10,000 s: the assumptions would try compiling
    assert decide("auto", long_trial, 10_000, "resnet18").compile
    refused = decide("auto", long_trial, 10_000, "resnet18", slower)
    assert not refused.compile and "no faster compiled" in refused.reason
    dear = decide("auto", step, 6000, "resnet18", Prior(compile_s=50, speedup=1.5, where="224 px, batch 256"))
    assert not dear.compile and "tui-hpo gpu benchmark" in dear.reason, "saves 20 s of 60: not worth 50 s"
    this_shape = Speeds(eager_step_s=0.01, compiled_step_s=0.011, compile_s=5)
    assert "runs no faster compiled" in decide("auto", this_shape, 6000, "resnet18", prior).reason, \
        "the shape's own measurement outranks the benchmark"
    assert decide(False, step, 6000, "resnet18", prior).compile is False


def test_only_a_matching_complete_measurement_is_a_prior() -> None:
    assert prior_from(None, "resnet18", TORCH) is None
    assert prior_from(h200(COMPILED), "resnet18", "2.15.0") is None, "another torch compiles differently"
    assert prior_from(h200(COMPILED), "efficientnet_b0", TORCH) is None
    skipped = model("resnet18", v("baseline", 1000), v("compiled", None, compile=True, skipped="--no-compile"))
    assert prior_from(h200(skipped), "resnet18", TORCH) is None


def test_the_worker_decides_with_its_devices_benchmark() -> None:
    """The wiring: a worker's compile choice passes the stored benchmark of its device and model."""
    from engine.sweep.image_trials import ImageTrials
    from engine.training.fit import Runtime

    events: list[str] = []
    worker = SimpleNamespace(
        store=SimpleNamespace(shape=lambda key: {"eager_step_s": 0.01}), _shape_key=lambda cfg: "shape",
        splits=[(np.arange(6400), np.arange(10))], config=SimpleNamespace(resources=SimpleNamespace(compile="auto")),
        benchmark=h200(COMPILED), torch_version=TORCH, compile_said=set(), runtime=Runtime(device="cuda:0"),
        _event=lambda kind, message, number, level="info": events.append(message))
    trial = SimpleNamespace(number=3, set_user_attr=lambda key, value: None)
    cfg = SimpleNamespace(model="resnet18", image_size=64, batch_size=64, epochs=60)  # 6,000 steps, 60 s eager
    runtime, _speeds = ImageTrials._compile_choice(worker, trial, cfg)
    assert runtime.compile and "tui-hpo gpu benchmark" in events[0]
    worker.benchmark = None
    runtime, _speeds = ImageTrials._compile_choice(worker, trial, cfg)
    assert not runtime.compile and "not measured here yet" in events[1]


# ----------------------------------------------------------------- the System screen and the tables

def test_the_system_screen_shows_this_machines_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from textual.widgets import Static

    from engine.system.platform import cpu_model
    from tests.test_tui import text_of, wait_for
    from tui_hpo.app import make_app

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cpu = ModelBench(model="test_resnet", image_size=32, batch=32, steps=5, memory="RSS growth",
                     variants=(v("baseline", 500, amp="off", channels_last=False),
                               v("amp bf16", 250, channels_last=False)))
    stored = replace(h200(cpu), device=benchmarks.device_key("cpu", cpu_model()), kind="cpu")

    async def scenario(expected: str) -> None:
        app = make_app(workdir=tmp_path, mode="system")
        async with app.run_test(size=(120, 40)) as pilot:
            panel = app.screen.query_one("#system-benchmark", Static)
            await wait_for(pilot, lambda: expected in text_of(panel))

    asyncio.run(scenario("no benchmark yet: run `tui-hpo gpu benchmark`"))
    benchmarks.save(stored)
    asyncio.run(scenario("bf16 is 0.5x the speed of full precision on test_resnet: slower here, keep amp off"))


def test_the_commands_tables_hold_figures_skips_and_verdicts() -> None:
    from rich.console import Console

    from tui_hpo.tables import benchmark_tables

    bench = h200(replace(COMPILED, variants=(*COMPILED.variants,
                                             v("amp fp16", None, amp="fp16", skipped="failed: out of memory"))))
    console = Console(width=120, file=io.StringIO(), record=True, color_system=None)
    for table in benchmark_tables(bench):
        console.print(table)
    text = console.export_text()
    assert "79% of an H200's datasheet 989" in text
    assert "amp fp16: failed: out of memory" in text
    assert "torch.compile on resnet18: 5 s to compile for a 2.0x gain: pays after 10 s" in text
    assert "2.00x" in text, "the compiled variant against the baseline"
    assert set(verdicts(bench)) >= {"device memory 4,100 GB/s", "host to device 52 GB/s"}


# ----------------------------------------------------------------- the real command, on this CPU

def test_bad_input_is_one_line() -> None:
    steps = run_cli("gpu", "benchmark", "--steps", "0")
    assert steps.returncode == 2 and steps.stderr == "tui-hpo: error: --steps: must be at least 1 (got 0)\n"
    unknown = run_cli("gpu", "benchmark", "--models", "resnet18,no_such_net", "--no-compile")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("tui-hpo: error: --models: unknown timm model 'no_such_net'")
    assert unknown.stderr.count("\n") == 1


def test_a_real_benchmark_on_the_cpu_measures_what_it_can_and_stores_it(tmp_path: Path) -> None:
    done = run_cli("gpu", "benchmark", "--models", "test_resnet", "--image-size", "16", "--batch", "8", "--steps", "3",
                   "--no-compile", "--json", env={"XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["kind"] == "cpu" and out["device"].startswith("cpu: ")
    assert out["matmul_tflops"]["fp32"]["value"] > 0
    assert out["matmul_tflops"]["fp16"]["value"] is None and out["matmul_tflops"]["fp16"]["why_not"]
    assert out["memory_bandwidth_gbs"]["value"] > 0
    assert out["host_to_device_gbs"]["value"] is None and "no GPU" in out["host_to_device_gbs"]["why_not"]
    assert any("host-to-device" in line for line in out["not_measured"])
    variants = {x["name"]: x for x in out["models"][0]["variants"]}
    assert variants["compiled"]["skipped"] == "--no-compile"
    assert "CUDA" in variants["amp fp16"]["skipped"]
    for name in ("baseline", "amp bf16", "channels-last on"):
        assert variants[name]["skipped"] is None and variants[name]["samples_per_s"] > 0, name
    assert variants["channels-last on"]["channels_last"] and not variants["baseline"]["channels_last"]
    assert any("test_resnet" in line for line in out["verdicts"])
    saved = benchmarks.load_all(tmp_path / "tui-hpo" / "gpu_benchmark.json")
    assert Path(out["saved"]) == tmp_path / "tui-hpo" / "gpu_benchmark.json"
    assert saved[out["device"]].models[0].variant("baseline").samples_per_s == variants["baseline"]["samples_per_s"]
