"""Where a new (model, shape)'s first epoch goes on a GPU: the first training steps timed one by
one, per model and per setting (precision, memory layout, cuDNN benchmark mode), each in a fresh
process so that nothing is warm.

On an H200 the quick preset's first epoch of each new (model, batch) ran at 64-154 samples/s
against 1,300-15,000 later (FACTS.md): this script tells which setting the stall follows
(runtime-compiled cuDNN kernels for bf16 channels-last convolutions, autotuning, lazy module
loading, first allocations) before anything is changed. `--profile` adds a torch.profiler table
of the first three steps of the first case.

CUDA only: without a GPU it says so and exits 0 (`--allow-cpu` runs it anyway, to try it).
Prints `first_step_s=` and `warmup_ratio=` (the first 20 steps over 20 steady ones) of the
default CUDA settings last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import ROOT

MODELS = ("resnet18", "efficientnet_b0", "convnext_nano")
# (name, amp, channels_last, cudnn.benchmark): the CUDA profile's settings first.
VARIANTS = (("bf16 channels-last", "bf16", True, False), ("bf16 contiguous", "bf16", False, False),
            ("fp32 channels-last", "off", True, False), ("bf16 channels-last, cudnn.benchmark", "bf16", True, True))
STEPS = 40


def one_case(model: str, amp: str, channels_last: bool, benchmark: bool, device: str, profile: bool) -> dict:
    """Runs in a fresh process: build, then time STEPS training steps one by one."""
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    from engine.config import TrainConfig
    from engine.training.models import build_model

    torch.backends.cudnn.benchmark = benchmark
    started = time.perf_counter()
    net = build_model(TrainConfig(model=model, image_size=64, augment=0, hflip=False), num_classes=10).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(192, 3, 64, 64, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (192,), device=device)
    build_s = time.perf_counter() - started
    times = []

    def step() -> None:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    table = None
    for i in range(STEPS):
        t0 = time.perf_counter()
        if profile and i == 0:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
            with torch_profile(activities=activities) as prof:
                for _ in range(3):
                    step()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        else:
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"build_s": build_s, "times": times, "profile": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of the first case's first steps")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm models")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, in a fresh process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(**json.loads(args.case))))
        return
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("first_epoch: no CUDA GPU here: nothing to measure")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{'model':<18}{'setting':<38}{'build':>7}{'step 1':>8}{'first 20':>10}{'steady 20':>10}")
    default_first, default_ratio = [], []
    models = args.models.split(",")
    for model in models:
        for index, (name, amp, channels_last, benchmark) in enumerate(VARIANTS):
            case = {"model": model, "amp": amp, "channels_last": channels_last, "benchmark": benchmark,
                    "device": device, "profile": args.profile and model == models[0] and index == 0}
            done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True,
                                  text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"{model:<18}{name:<38} failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            t = result["times"]
            first, steady = sum(t[:20]), sum(t[-20:])
            print(f"{model:<18}{name:<38}{result['build_s']:7.2f}{t[0]:8.2f}{first:10.2f}{steady:10.3f}")
            if result["profile"]:
                print(result["profile"])
            if index == 0:
                default_first.append(t[0])
                default_ratio.append(first / max(steady, 1e-9))
    if default_first:
        print(f"first_step_s={max(default_first):.2f}")
        print(f"warmup_ratio={max(default_ratio):.1f}")


if __name__ == "__main__":
    main()
