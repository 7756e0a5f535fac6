"""`tui-hpo gpu benchmark`: matmul TFLOP/s, memory and host-to-device bandwidth, and per model an
A/B of real training steps (eager or compiled, each precision, channels-last on or off), with
plain-words verdicts. The result is stored in the user cache for the System screen and the
compile decision (`resources.compile: auto`). On a machine without a GPU it measures the CPU and
says, one line each, what it cannot measure there."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import click

from engine.errors import UserError
from engine.system import timm_names


def _models(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UserError("no model named (e.g. --models resnet18,efficientnet_b0)", key="--models")
    return names


def _check(image_size: int | None, batch: int | None, steps: int | None) -> None:
    for key, value, low, high in (("--image-size", image_size, 8, 1024), ("--batch", batch, 1, None),
                                  ("--steps", steps, 1, None)):
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise UserError(f"must be {bounds} (got {value})", key=key)


@contextlib.contextmanager
def _empty_kernel_caches() -> Iterator[None]:
    """Inductor and Triton caches in a temporary folder: compile seconds measured cold, as a new
    shape in a sweep pays them."""
    names = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    old = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="tui-hpo-benchmark-") as folder:
        for name in names:
            os.environ[name] = os.path.join(folder, name.split("_")[0].lower())
        try:
            yield
        finally:
            for name, value in old.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@click.command()
@click.option("--models", "models_text", metavar="M,...",
              help="timm models to train (default: resnet18,efficientnet_b0 on a GPU; test_resnet on the CPU).")
@click.option("--image-size", type=int, metavar="S",
              help="Image size in pixels (default: 224 on a GPU, 32 on the CPU).")
@click.option("--batch", type=int, metavar="B", help="Batch size (default: 256 on a GPU, 32 on the CPU).")
@click.option("--steps", type=int, metavar="N", help="Timed training steps per variant (default: 20 on a GPU, 5 on "
              "the CPU), after warm-up.")
@click.option("--no-compile", is_flag=True,
              help="Skip the torch.compile variant (it takes a minute or more per model).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def benchmark(models_text: str | None, image_size: int | None, batch: int | None, steps: int | None,
              no_compile: bool, as_json: bool) -> None:
    """How fast this GPU (or CPU) trains: matmuls, bandwidths, and eager/compiled, precision and
    channels-last variants per model, with verdicts. Stored for the System screen and the
    compile decision."""
    names = _models(models_text)
    listed = timm_names.known()  # a typo answered before torch is imported, where timm was listed
    for name in names or ():
        if listed is not None and not listed.knows(name):
            raise timm_names.unknown_model(name, listed.names, "--models")
    _check(image_size, batch, steps)
    from engine.training import gpu_bench

    device = gpu_bench.pick_device()
    chosen: dict[str, Any] = gpu_bench.defaults(device)
    names = names or chosen["models"]
    gpu_bench.check_models(names)
    with _empty_kernel_caches():
        bench = gpu_bench.run(names, image_size or chosen["image_size"], batch or chosen["batch"],
                              steps or chosen["steps"], compile=not no_compile, device=device,
                              progress=lambda line: click.echo(f"measuring: {line}", err=True))
    from engine.insights.gpu_verdicts import verdicts
    from engine.system import benchmarks

    path = benchmarks.save(bench)
    if as_json:
        click.echo(json.dumps({**bench.to_dict(), "verdicts": verdicts(bench), "saved": str(path)}, indent=2))
        return
    from rich.console import Console

    from tui_hpo.tables import benchmark_tables

    console = Console()
    for table in benchmark_tables(bench):
        console.print(table)
    for line in bench.not_measured:
        console.print(f"[dim]not measured here: {line}[/]")
    console.print(f"saved to {path}: the System screen shows it, and `resources.compile: auto` starts from it")
