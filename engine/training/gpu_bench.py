"""`tui-hpo gpu benchmark`: how fast this device is, measured.

Plain functions, one figure each: matmul TFLOP/s per precision, device memory bandwidth, host-to-
device bandwidth, and per model real training steps (`fit.build_loop` and `fit.train_step`, the
code a sweep's trials run) in a few variants: a baseline as the platform profile trains, then one
change at a time (`engine.system.benchmarks.plan_variants`). On the CPU it measures what a CPU
has and says what it cannot; the figures become words in `engine.insights.gpu_verdicts`.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
import psutil
import torch

from engine.config import DataConfig, TrainConfig
from engine.datasets.scan import Scan
from engine.system import timm_names
from engine.system.benchmarks import Benchmark, Figure, ModelBench, Variant, device_key, plan_variants
from engine.system.platform import profile, usable_cores
from engine.training.devices import device_name, probe
from engine.training.fit import Runtime, build_loop, train_step
from engine.training.models import list_timm_models
from engine.training.tensors import ImageData

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32, "fp32": torch.float32}
CLASSES = 10  # the head's size matters little next to the body of any model here
MATMUL_N = {"cuda": 8192, "cpu": 512}
MATMUL_BUDGET_S = {"cuda": 0.5, "cpu": 0.2}  # timed matmuls per precision, after warm-up
CPU_SLOW_S = 1.0  # one CPU matmul slower than this (bf16 without native support): not measured
COPY_MB = {"cuda": 2048, "cpu": 64}
HOST_COPY_MB = 512
WARMUP = {"cuda": 3, "cpu": 2}  # steps before timing; a compiled variant compiles in the first


def pick_device() -> torch.device:
    """The first CUDA GPU, else the CPU (MPS is left to `tui-hpo train`)."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def defaults(device: torch.device) -> dict[str, object]:
    """What the benchmark runs unless asked otherwise: the quick preset's GPU models at 224 px on
    a GPU; one of timm's tiny test models at 32 px on the CPU, where it must stay short."""
    if device.type == "cuda":
        return {"models": ("resnet18", "efficientnet_b0"), "image_size": 224, "batch": 256, "steps": 20}
    return {"models": ("test_resnet",), "image_size": 32, "batch": 32, "steps": 5}


def check_models(names: Sequence[str]) -> None:
    import timm

    for name in names:
        if not timm.is_model(name):
            raise timm_names.unknown_model(name, list_timm_models().names, "--models")
    list_timm_models()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], object], reps: int) -> float:
    """Seconds for `reps` calls of `fn`, the device synchronised before and after."""
    _sync(device)
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return time.perf_counter() - started


def _reps_for(one_s: float, budget_s: float, most: int = 200) -> int:
    return max(1, min(most, int(budget_s / max(one_s, 1e-9))))


@contextlib.contextmanager
def _fp32_matmuls(precision: str) -> Iterator[None]:
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def matmul_why_not(device: torch.device, dtype: str) -> str | None:
    """Why `dtype` matmuls are not measured on `device`, or None."""
    if device.type != "cuda":
        if dtype == "fp16":
            return "no fast fp16 on a CPU: a CUDA GPU's figure"
        if dtype == "tf32":
            return "TF32 is a CUDA tensor-core mode"
        return None
    major, minor = torch.cuda.get_device_capability(device)
    if dtype in ("bf16", "tf32") and major < 8:
        return f"needs compute capability 8.0 or newer (this GPU: {major}.{minor})"
    return None


def matmul_tflops(device: torch.device, dtype: str, n: int | None = None) -> Figure:
    """Dense (n x n) @ (n x n) matmuls per second in `dtype` ("bf16", "fp16", "tf32", "fp32"), as
    TFLOP/s (2 n^3 per product), timed after warm-up. TF32 is float32 with tensor cores allowed."""
    why = matmul_why_not(device, dtype)
    if why:
        return Figure(why_not=why)
    n = n or MATMUL_N[device.type]
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    with _fp32_matmuls("high" if dtype == "tf32" else "highest"):
        one = _timed(device, lambda: a @ b, 1)  # warm-up: kernels chosen, memory allocated
        if device.type == "cpu" and one > CPU_SLOW_S:
            return Figure(why_not=f"too slow on this CPU ({one:.1f} s for one {n}x{n} product): no native {dtype}")
        one = _timed(device, lambda: a @ b, 1)
        reps = _reps_for(one, MATMUL_BUDGET_S[device.type])
        seconds = _timed(device, lambda: a @ b, reps)
    return Figure(value=2 * n**3 * reps / seconds / 1e12)


def memory_bandwidth_gbs(device: torch.device, mb: int | None = None) -> Figure:
    """Device memory bandwidth in GB/s: a large buffer copied on the device, bytes read plus
    written per second."""
    nbytes = (mb or COPY_MB[device.type]) * 2**20
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    one = _timed(device, lambda: dst.copy_(src), 1)
    one = _timed(device, lambda: dst.copy_(src), 1)
    reps = _reps_for(one, 0.3, 100)
    seconds = _timed(device, lambda: dst.copy_(src), reps)
    return Figure(value=2 * nbytes * reps / seconds / 1e9)


def host_to_device_gbs(device: torch.device, mb: int = HOST_COPY_MB) -> Figure:
    """Pinned host memory to the GPU in GB/s, as the training copies batches (non-blocking);
    nothing to measure on the CPU."""
    if device.type != "cuda":
        return Figure(why_not="no GPU: the CPU trains from host memory, nothing is copied")
    host = torch.empty(mb * 2**20, dtype=torch.uint8).pin_memory()
    on_device = torch.empty_like(host, device=device)
    _timed(device, lambda: on_device.copy_(host, non_blocking=True), 2)
    reps = 10
    seconds = _timed(device, lambda: on_device.copy_(host, non_blocking=True), reps)
    return Figure(value=host.numel() * reps / seconds / 1e9)


def synthetic_data(image_size: int, batch: int, seed: int = 0) -> ImageData:
    """One batch of random images and labels, as an in-memory dataset (what `build_loop` takes)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, CLASSES, (batch,), generator=generator)
    scan = Scan(layout="synthetic", root="benchmark", classes=[str(i) for i in range(CLASSES)], count=batch)
    return ImageData(scan=scan, cfg=DataConfig(), labels=labels, _base=images)


def _failure(exc: BaseException, batch: int) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return f"failed: out of memory at batch {batch}"
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"failed: {exc.__class__.__name__}: {first}" if first else f"failed: {exc.__class__.__name__}"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _steps(cfg: TrainConfig, data: ImageData, runtime: Runtime, device: torch.device, warmup: int,
           steps: int) -> tuple[float, float, int]:
    """(the first step's seconds, the timed steps' seconds, the peak RSS in bytes on the CPU)."""
    process = psutil.Process()
    rss_peak = 0
    loop = build_loop(cfg, data, np.arange(cfg.batch_size), runtime)
    loop.model.train()
    xb, yb = data.images(cfg.image_size).to(device), data.labels.to(device)
    micro = 0

    def step() -> None:
        nonlocal micro, rss_peak
        micro += 1
        train_step(loop, xb, yb, cfg, micro)
        if device.type == "cpu":
            rss_peak = max(rss_peak, process.memory_info().rss)

    first = _timed(device, step, 1)
    if warmup > 1:
        _timed(device, step, warmup - 1)
    if device.type == "cuda":  # one synchronisation for all: the host queues steps ahead, as in training
        return first, _timed(device, step, steps), rss_peak
    # On the CPU each step is timed alone and the median kept: other processes' bursts (a busy
    # laptop, a shared CI runner) stretch single steps, not the typical one.
    return first, statistics.median(_timed(device, step, 1) for _ in range(steps)) * steps, rss_peak


def run_variant(model: str, data: ImageData, image_size: int, device: torch.device, steps: int,
                variant: Variant, warmup: int | None = None) -> Variant:
    """`variant` measured: `warmup` training steps (the first one compiles a compiled model),
    then `steps` timed ones. Samples/s over the timed steps; peak memory (CUDA's max allocated,
    on the CPU the process's RSS growth); for a compiled model the first step's time beyond a
    steady one. A variant that breaks (out of memory, no compiler) is returned as failed."""
    if variant.skipped:
        return variant
    warmup = max(1, warmup if warmup is not None else WARMUP[device.type])
    batch = len(data.labels)
    cfg = TrainConfig(model=model, batch_size=batch, image_size=image_size, augment=0.0, hflip=False,
                      epochs=warmup + steps + 1)
    runtime = Runtime(device=str(device), amp=variant.amp, compile=variant.compile,
                      channels_last=variant.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = psutil.Process().memory_info().rss
    try:
        first, seconds, rss_peak = _steps(cfg, data, runtime, device, warmup, steps)
    except Exception as exc:
        return replace(variant, skipped=_failure(exc, batch))
    finally:
        if variant.compile:
            import torch._dynamo as dynamo

            dynamo.reset()  # the next variant starts from nothing compiled
        _free(device)
    steady = seconds / steps
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else max(0, rss_peak - rss_before) / 2**20)
    return replace(variant, samples_per_s=batch / steady, peak_mem_mb=peak,
                   compile_s=max(0.0, first - steady) if variant.compile else None)


def model_variants(model: str, image_size: int, batch: int, device: torch.device, steps: int,
                   variants: Sequence[Variant], on_variant: Callable[[str], None] = lambda _n: None) -> ModelBench:
    """Every variant of `model`'s training step (see `run_variant`) on one synthetic batch."""
    data = synthetic_data(image_size, batch)
    done = []
    for variant in variants:
        if not variant.skipped:
            on_variant(variant.name)
        done.append(run_variant(model, data, image_size, device, steps, variant))
    return ModelBench(model=model, image_size=image_size, batch=batch, steps=steps, variants=tuple(done),
                      date=_now(), memory="CUDA max allocated" if device.type == "cuda" else "RSS growth")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _not_measured(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return []
    return ["host-to-device bandwidth: no GPU, the CPU trains from host memory",
            "fp16 (matmul and training): needs a CUDA GPU",
            "CUDA kernels (TF32 tensor cores, cuDNN convolutions, GPU memory): no CUDA GPU here"]


def run(models: Sequence[str], image_size: int, batch: int, steps: int, compile: bool = True,
        device: torch.device | None = None, progress: Callable[[str], None] = lambda _s: None) -> Benchmark:
    """The whole benchmark on `device` (default: `pick_device`)."""
    device = device or pick_device()
    name = device_name(str(device))
    info = probe()
    resources = profile(info, "cuda" if device.type == "cuda" else "cpu")["resources"]
    threads = None
    if device.type == "cpu":  # as a sweep's trials run here: the cores split among the profile's workers
        threads = max(1, usable_cores() // int(resources["parallel"]))
    with _threads(threads):
        progress(f"benchmarking {name}" + (f" with {threads} thread(s), as each of the profile's "
                                           f"{resources['parallel']} parallel trials" if threads else ""))
        return _run(models, image_size, batch, steps, compile, device, name, resources, threads, progress)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _run(models: Sequence[str], image_size: int, batch: int, steps: int, compile: bool, device: torch.device,
         name: str, resources: dict[str, object], threads: int | None,
         progress: Callable[[str], None]) -> Benchmark:
    matmul = {}
    for dtype in ("bf16", "fp16", "tf32", "fp32"):
        if device.type == "cuda" or not matmul_why_not(device, dtype):
            progress(f"matmul {dtype}")
        matmul[dtype] = matmul_tflops(device, dtype)
        _free(device)
    progress("memory bandwidth")
    memory = memory_bandwidth_gbs(device)
    _free(device)
    if device.type == "cuda":
        progress("host-to-device bandwidth")
    host = host_to_device_gbs(device)
    _free(device)
    bf16 = device.type != "cuda" or torch.cuda.get_device_capability(device)[0] >= 8
    plan = plan_variants(str(resources["amp"]), bool(resources["channels_last"]), device.type == "cuda", bf16,
                         None if compile else "--no-compile")
    benched = []
    for model in models:
        benched.append(model_variants(model, image_size, batch, device, steps, plan,
                                      lambda v, m=model: progress(f"{m}: {v}")))
    return Benchmark(device=device_key(str(device), name), kind=device.type, date=_now(),
                     torch_version=metadata.version("torch"), matmul_tflops=matmul, memory_bandwidth_gbs=memory,
                     host_to_device_gbs=host, models=tuple(benched), not_measured=tuple(_not_measured(device)),
                     threads=threads)
