"""Training as plain functions, after timm's train.py: build, train one epoch, validate, fit.

No framework: `fit` runs the epochs and hands each epoch's metrics to a callback, which is where
a sweep reports to its trial (and may raise `optuna.TrialPruned`) and writes the metrics row.
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler

from engine.config import ResourcesConfig, TrainConfig
from engine.errors import Interrupted
from engine.training import resume as resume_state
from engine.training.models import build_model, head_parameters
from engine.training.resume import ResumeFile
from engine.training.tensors import ImageData, augment

# BatchNorm's running statistics are an average with momentum 0.1 over the last ~10 steps, of
# activations of weights that were still moving: after a few dozen steps they describe none of
# them, and eval-mode predictions collapse (often to one class) while the training loss falls.
# So while a run is young, each validation first recomputes them over the training images at the
# current weights ("precise BN", as in fvcore and pycls), which costs a forward pass over at most
# PRECISE_BN_IMAGES images. Past PRECISE_BN_BELOW steps the running averages are good enough.
PRECISE_BN_BELOW = 1000  # optimizer steps
PRECISE_BN_IMAGES = 256


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite: the trial fails, the sweep goes on."""


@dataclass(frozen=True)
class Runtime:
    """How a worker runs training on its device; comes from the platform profile."""

    device: str = "cpu"
    amp: str = "off"  # "off", "bf16" or "fp16"
    compile: bool = False  # `resources.compile: auto` is decided per trial (engine.sweep.compile_policy)
    channels_last: bool = False
    pin_memory: bool = False

    @classmethod
    def from_resources(cls, res: ResourcesConfig, device: str) -> Runtime:
        on_cuda = device.startswith("cuda")
        return cls(device=device, amp=(res.amp or "off") if on_cuda else "off",
                   compile=res.compile is True, channels_last=bool(res.channels_last),
                   pin_memory=bool(res.pin_memory) and on_cuda)


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_f1: float
    lr: float
    samples_per_s: float
    peak_mem_mb: float
    seconds: float
    class_f1: tuple[float, ...] = ()  # per class, in the dataset's class order (not a metrics column)

    def to_dict(self) -> dict[str, float]:
        """The numbers of the per-epoch metrics row."""
        row = asdict(self)
        row.pop("class_f1")
        return row


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    grouped = cfg.backbone_lr_scale != 1.0 or cfg.layer_decay is not None
    params: Any = param_groups(model, cfg) if grouped else model
    if cfg.optimizer == "sgd":  # timm's "sgd" is Nesterov, which rejects momentum 0; "momentum" is plain SGD
        return create_optimizer_v2(params, opt="momentum", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   momentum=cfg.momentum)
    return create_optimizer_v2(params, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """timm's parameter groups (no weight decay for biases and norms; with `layer_decay`, one per
    layer, deeper layers at higher lr: `param_groups_layer_decay`), each split into the classifier
    head at `lr` and the backbone at `lr x backbone_lr_scale`, head groups first (so group 0's lr is
    the one recorded per epoch). Each group's `lr` is set here rather than as timm's `lr_scale`,
    which its schedulers apply only from their first update: the first steps would run unscaled."""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    if cfg.layer_decay is not None:
        groups = param_groups_layer_decay(model, cfg.weight_decay, no_weight_decay_list=skip,
                                          layer_decay=cfg.layer_decay)
    else:
        groups = param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=skip)
    head = {id(p) for p in head_parameters(model)}
    split: list[dict[str, Any]] = []
    for in_head, factor in ((True, 1.0), (False, cfg.backbone_lr_scale)):
        for group in groups:
            params = [p for p in group["params"] if (id(p) in head) == in_head]
            if params:
                scale = group.get("lr_scale", 1.0) * factor
                split.append({k: v for k, v in group.items() if k != "lr_scale"} | {"params": params,
                                                                                     "lr": cfg.lr * scale})
    return split


def freeze_backbone(model: nn.Module, frozen: bool) -> bool:
    """Train only the classifier head (`frozen`), or everything; returns `frozen`. A frozen
    parameter gets no gradient, so no optimizer step or weight decay moves it."""
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)
    return frozen


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> Scheduler:
    """timm's schedulers, updated per optimizer step (`step_update`): a linear warm-up over
    `warmup_ratio` of the steps, then cosine to zero, three step decays by `step_gamma`, or
    constant (`none`: a step schedule that never decays)."""
    warmup = int(steps * cfg.warmup_ratio)
    after = max(1, steps - warmup)
    common: dict[str, Any] = {"warmup_t": warmup, "warmup_lr_init": cfg.lr / warmup if warmup else 0.0,
                              "warmup_prefix": True, "t_in_epochs": False}
    if cfg.scheduler == "cosine":
        return CosineLRScheduler(optimizer, t_initial=after, lr_min=0.0, **common)
    decay = cfg.step_gamma if cfg.scheduler == "step" else 1.0
    return StepLRScheduler(optimizer, decay_t=max(1, math.ceil(after / 3)), decay_rate=decay, **common)


def class_f1(confusion: torch.Tensor) -> torch.Tensor:
    """F1 of each class from a (true, predicted) confusion matrix; NaN for a class that occurs
    in neither the labels nor the predictions."""
    tp = confusion.diag().float()
    support = confusion.sum(1).float()
    predicted = confusion.sum(0).float()
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    return torch.where((support + predicted) > 0, f1, torch.full_like(f1, float("nan")))


def macro_f1(confusion: torch.Tensor) -> float:
    """Macro-F1 over the classes that occur in the labels or the predictions."""
    f1 = class_f1(confusion)
    present = ~f1.isnan()
    return float(f1[present].mean()) if present.any() else 0.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.current_allocated_memory() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _autocast(runtime: Runtime, device: torch.device) -> contextlib.AbstractContextManager:
    if runtime.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if runtime.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _prepare(xb: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
             runtime: Runtime) -> torch.Tensor:
    x = xb.to(device, non_blocking=runtime.pin_memory).float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


@dataclass
class _Loop:
    """What one training run carries from epoch to epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Scheduler
    scaler: torch.amp.GradScaler | None
    loss_fn: nn.Module
    device: torch.device
    runtime: Runtime
    generator: torch.Generator
    mean: torch.Tensor
    std: torch.Tensor
    updates: int = 0  # optimizer steps so far: the schedule's clock
    resident: torch.device | None = None  # the GPU the images sit on, when they fit there
    eager: nn.Module | None = None  # the model before torch.compile: statistics passes use it
    frozen: bool = False  # the backbone is frozen (train.freeze_epochs): its BatchNorm statistics too


def train_one_epoch(loop: _Loop, data: ImageData, idx: np.ndarray, cfg: TrainConfig, epoch: int,
                    should_stop: Callable[[], bool]) -> tuple[float, float]:
    """One pass over `idx`; returns (mean train loss, samples per second)."""
    loop.model.train()
    if loop.frozen:  # the pretrained statistics stay: the frozen backbone's BatchNorm layers in eval mode
        for m in loop.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    total_loss, seen, started = torch.zeros((), device=loop.device), 0, time.perf_counter()
    loop.optimizer.zero_grad(set_to_none=True)
    micro = 0
    for xb, yb in data.batches(idx, cfg.image_size, cfg.batch_size, True, loop.generator, loop.runtime.pin_memory,
                               loop.resident):
        if should_stop():
            raise Interrupted("stopped during training")
        if len(yb) == 1 and len(idx) > 1:
            continue  # a shuffled pass's last batch of one: BatchNorm cannot train on a single sample
        micro += 1
        loss = train_step(loop, xb, yb, cfg, micro)
        total_loss += loss.detach() * len(yb)
        seen += len(yb)
    if micro % cfg.accum_steps:
        _step(loop)
    elapsed = time.perf_counter() - started
    # Checked once per epoch, not per step: a per-step check would sync the GPU every batch.
    mean_loss = float(total_loss) / max(1, seen)
    if not math.isfinite(mean_loss):
        raise NonFiniteLoss(f"loss became {mean_loss} in epoch {epoch + 1}")
    return mean_loss, seen / max(elapsed, 1e-9)


def _unlabelled(_phase: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def train_step(loop: _Loop, xb: torch.Tensor, yb: torch.Tensor, cfg: TrainConfig, micro: int,
               phase: Callable[[str], contextlib.AbstractContextManager] = _unlabelled) -> torch.Tensor:
    """One training batch, the `micro`-th of the epoch (counted from 1): inputs onto the device
    and augmented, forward, backward, and on every `accum_steps`-th batch the optimizer step.
    Returns the (unscaled) loss. `phase(name)` wraps each part ("data", "forward", "backward",
    "optimizer"): nothing in training; `torch.profiler.record_function` when `gpu profile`
    measures where a step's time goes, so both run this same code."""
    with phase("data"):
        x = _prepare(xb, loop.mean, loop.std, loop.device, loop.runtime)
        x = augment(x, float(cfg.augment), bool(cfg.hflip), loop.generator)
        y = yb.to(loop.device, non_blocking=loop.runtime.pin_memory)
    with phase("forward"), _autocast(loop.runtime, loop.device):
        loss = loop.loss_fn(loop.model(x), y)
    with phase("backward"):
        scaled = loss / cfg.accum_steps
        (loop.scaler.scale(scaled) if loop.scaler else scaled).backward()
    if micro % cfg.accum_steps == 0:
        with phase("optimizer"):
            _step(loop)
    return loss


def _step(loop: _Loop) -> None:
    if loop.scaler:
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    else:
        loop.optimizer.step()
    loop.optimizer.zero_grad(set_to_none=True)
    loop.updates += 1
    loop.schedule.step_update(loop.updates)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(loop: _Loop, data: ImageData, idx: np.ndarray, cfg: TrainConfig) -> None:
    """Replace every BatchNorm layer's running statistics by their exact average over (a fixed
    sample of at most PRECISE_BN_IMAGES of) the training images `idx`, unaugmented, at the
    current weights. Runs the eager model: a compiled one would compile again for no-grad."""
    model = loop.eager or loop.model
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches that follow
    sample = idx[np.random.default_rng(cfg.seed).permutation(len(idx))[:PRECISE_BN_IMAGES]]
    model.train()
    for xb, _yb in data.batches(np.sort(sample), cfg.image_size, cfg.batch_size, False, loop.generator,
                                loop.runtime.pin_memory, loop.resident):
        x = _prepare(xb, loop.mean, loop.std, loop.device, loop.runtime)
        with _autocast(loop.runtime, loop.device):
            model(x)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


@torch.no_grad()
def validate(loop: _Loop, data: ImageData, idx: np.ndarray,
             cfg: TrainConfig) -> tuple[float, float, float, tuple[float, ...]]:
    """(val loss, accuracy, macro-F1, per-class F1) on `idx`."""
    loop.model.eval()
    n = data.num_classes
    confusion = torch.zeros(n, n, dtype=torch.int64, device=loop.device)
    total_loss = torch.zeros((), device=loop.device)
    for xb, yb in data.batches(idx, cfg.image_size, max(cfg.batch_size, 256), False, loop.generator,
                               loop.runtime.pin_memory, loop.resident):
        x = _prepare(xb, loop.mean, loop.std, loop.device, loop.runtime)
        y = yb.to(loop.device)
        with _autocast(loop.runtime, loop.device):
            logits = loop.model(x)
        total_loss += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n).view(n, n)
    count = int(confusion.sum())
    accuracy = float(confusion.diag().sum()) / max(1, count)
    confusion = confusion.cpu()
    per_class = tuple(round(float(v), 4) for v in class_f1(confusion))
    return float(total_loss) / max(1, count), accuracy, macro_f1(confusion), per_class


@dataclass(frozen=True)
class EarlyStop:
    """Stop a run whose `metric` has not improved by more than `min_delta` for `patience` epochs,
    keeping the weights of its best epoch: a trial's own stopping rule, apart from pruning, which
    compares trials with each other."""

    metric: str
    maximize: bool
    patience: int
    min_delta: float = 0.0

    def gain(self, value: float, best: float | None) -> float:
        if best is None:
            return math.inf
        return value - best if self.maximize else best - value

    def best_epoch(self, history: list[EpochMetrics]) -> int:
        """The epoch whose weights a stopped run keeps: the last one that improved."""
        best, at = None, 0
        for m in history:
            value = float(getattr(m, self.metric))
            if self.gain(value, best) > self.min_delta:
                best, at = value, m.epoch
        return at


def build_loop(cfg: TrainConfig, data: ImageData, train_idx: np.ndarray, runtime: Runtime) -> _Loop:
    """The model (seeded by `cfg.seed`), optimizer, schedule over `cfg.epochs` and the rest of a
    run's state, as `fit` trains them; `gpu profile` builds its run here too, so it measures the
    same thing."""
    torch.manual_seed(cfg.seed)
    device = torch.device(runtime.device)
    model = build_model(cfg, data.num_classes).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    steps = cfg.epochs * math.ceil(math.ceil(len(train_idx) / cfg.batch_size) / cfg.accum_steps)
    schedule = build_schedule(optimizer, cfg, steps)
    mean, std = data.mean_std(cfg.image_size, train_idx)
    return _Loop(
        model=torch.compile(model) if runtime.compile else model,
        optimizer=optimizer, schedule=schedule,
        scaler=torch.amp.GradScaler(device.type) if runtime.amp == "fp16" else None,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        device=device, runtime=runtime,
        generator=torch.Generator().manual_seed(cfg.seed),
        mean=mean.to(device), std=std.to(device),
        # On a GPU the images of an in-memory dataset are copied there once: no host gather, pin
        # and copy per step, which small models on a big GPU otherwise wait for.
        resident=device if device.type == "cuda" else None,
        eager=model,
    )


def fit(cfg: TrainConfig, data: ImageData, split: tuple[np.ndarray, np.ndarray], runtime: Runtime,
        on_epoch: Callable[[EpochMetrics], None] = lambda m: None,
        should_stop: Callable[[], bool] = lambda: False,
        early_stop: EarlyStop | None = None,
        resume: ResumeFile | None = None) -> tuple[nn.Module, list[EpochMetrics]]:
    """Train `cfg` on one split; deterministic on the CPU for a given `cfg.seed`. With
    `early_stop`, the run may end before `cfg.epochs`, and the model returned carries its best
    epoch's weights (`early_stop.best_epoch`). With `resume`, the run's state is saved when
    `resume.due` says (every few epochs or minutes), and a saved state for the same `cfg` is where it starts: its epochs
    are handed to `on_epoch` again, and `resume.resumed_from` says after which epoch it went on."""
    unresolved = [k for k in ("image_size", "augment", "hflip", "batch_size") if getattr(cfg, k) == "auto"]
    if unresolved:  # a programming error: every caller resolves the config against its data first
        raise ValueError(f"train.{unresolved[0]} is 'auto': resolve it with engine.datasets.defaults.apply")
    train_idx, val_idx = split
    loop = build_loop(cfg, data, train_idx, runtime)
    model, device, optimizer = loop.eager, loop.device, loop.optimizer
    assert model is not None
    precise_bn = has_batchnorm(model)
    best_state: dict[str, torch.Tensor] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history: list[EpochMetrics] = []
    saved = resume_state.load(resume, cfg) if resume is not None else None
    if saved is not None:
        resume_state.restore(loop, saved, adopt=resume.adopt)  # type: ignore[union-attr]
        history = [EpochMetrics(**{**m, "class_f1": tuple(m["class_f1"])}) for m in saved["history"]]
        best_state, resume.resumed_from = saved["best_state"], saved["epoch"] + 1  # type: ignore[union-attr]
        for metrics in history:  # the rerun's own record: rows, reports to the pruner
            on_epoch(metrics)
    for epoch in range(len(history), cfg.epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        if cfg.freeze_epochs:  # the first freeze_epochs epochs train the classifier head only
            loop.frozen = freeze_backbone(model, epoch < cfg.freeze_epochs)
        train_loss, rate = train_one_epoch(loop, data, train_idx, cfg, epoch, should_stop)
        if precise_bn and loop.updates < PRECISE_BN_BELOW and not loop.frozen:
            recompute_batchnorm(loop, data, train_idx, cfg)
        val_loss, accuracy, f1, per_class = validate(loop, data, val_idx, cfg)
        metrics = EpochMetrics(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_accuracy=accuracy,
                               val_f1=f1, lr=lr, samples_per_s=rate, peak_mem_mb=peak_memory_mb(device),
                               seconds=time.perf_counter() - started, class_f1=per_class)
        history.append(metrics)
        stop_early = False
        if early_stop is not None:
            best_epoch = early_stop.best_epoch(history)
            if best_epoch == epoch:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            stop_early = epoch - best_epoch >= early_stop.patience
        # Saved before `on_epoch` hears of the epoch, so what it reports (a Ray Tune checkpoint)
        # already holds that epoch.
        if resume is not None and resume.due(epoch):
            resume_state.save(resume, loop, cfg, epoch, [asdict(m) for m in history], best_state)
        on_epoch(metrics)
        if stop_early:
            break
    if early_stop is not None and early_stop.best_epoch(history) < len(history) - 1:
        model.load_state_dict(best_state)
    return model, history


def at_batch(cfg: TrainConfig, batch: int) -> TrainConfig:
    """`cfg` at a smaller `batch`, with the gradient accumulation that keeps its effective batch:
    the same experiment in less memory."""
    factor = max(1, cfg.batch_size // batch)
    return cfg.model_copy(update={"batch_size": batch, "accum_steps": cfg.accum_steps * factor})


def fit_within_memory(cfg: TrainConfig, data: ImageData, split: tuple[np.ndarray, np.ndarray], runtime: Runtime,
                      on_epoch: Callable[[EpochMetrics], None], should_stop: Callable[[], bool],
                      on_step_down: Callable[[TrainConfig, TrainConfig], None],
                      early_stop: EarlyStop | None = None, resume: ResumeFile | None = None,
                      ) -> tuple[nn.Module, list[EpochMetrics], TrainConfig]:
    """`fit`, and on running out of memory (CUDA OOM, or MemoryError on the CPU) again with half
    the batch and twice the gradient accumulation: the same effective batch, so the same
    experiment. `on_step_down(old, new)` hears of each step before the fold starts again.
    Returns the config that fitted."""
    while True:
        try:
            model, history = fit(cfg, data, split, runtime, on_epoch, should_stop, early_stop, resume)
            return model, history, cfg
        except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
            if cfg.batch_size < 2:
                raise
            smaller = at_batch(cfg, cfg.batch_size // 2)
            del exc  # its traceback holds the failed step's tensors
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            on_step_down(cfg, smaller)
            cfg = smaller
