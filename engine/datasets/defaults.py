"""Defaults that depend on the data: the training length, the image size and the augmentation.

Presets were once tuned on the embedded 8x8 digits (1,438 training images), and did not carry
over: four epochs of a few hundred photos are 16 optimizer steps, and 32 px throws away what
tells photos apart. So a preset says what it wants in terms that hold across datasets
(`train.min_steps`, `train.max_steps`, `image_size: auto`, ...), and this module turns them into
numbers for the data at hand, once per sweep, before the study is created: every worker then
reads the same resolved config, and it is what `config.yaml` shows, with the reasons.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import SweepConfig
from engine.config.schema import AshaConfig, HyperbandConfig
from engine.config.space import ParamSpec
from engine.datasets.scan import Scan, split_sizes

SIZE_SAMPLE = 200  # images whose headers are read to find the data's typical size
PHOTO_MIN_SIDE = 40  # px: a median shorter side below this is glyph-like (digits, icons, letters)
SIZE_LADDER = (32, 48, 64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512)
# The largest automatic image size per platform: what a quick sweep can afford there. A GPU
# trains a 224 px ResNet-18 in seconds per epoch; two CPU cores need minutes at that size.
AUTO_SIZE_CAP = {"cuda": 224, "mps": 128, "cpu": 64}
GLYPH_SIZE = 32  # small images are upsampled to this: the smallest the presets' models handle well
PHOTO_AUGMENT = 0.3  # rotation/scale/shift strength for photos (engine.training.tensors.augment)


@dataclass(frozen=True)
class ImageShapes:
    """What the headers of (a sample of) the images say."""

    count: int  # images whose headers were read
    median_width: int
    median_height: int
    median_side: int  # median of each image's shorter side
    colour: float  # share of images in colour

    @property
    def photo(self) -> bool:
        return self.median_side >= PHOTO_MIN_SIDE

    def describe(self) -> str:
        kind = "photos" if self.photo else "small glyph-like images"
        tone = "colour" if self.colour >= 0.5 else "greyscale"
        return f"{kind} (median {self.median_width}x{self.median_height} px, {tone})"


def image_shapes(found: Scan) -> ImageShapes:
    """Sizes from the headers of up to SIZE_SAMPLE images spread over the dataset; no decoding."""
    if found.layout == "digits":
        return ImageShapes(count=found.count, median_width=8, median_height=8, median_side=8, colour=0.0)
    from PIL import Image

    step = max(1, len(found.entries) // SIZE_SAMPLE)
    widths, heights, sides, colour = [], [], [], 0
    for entry in found.entries[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(entry.path) as image:
                width, height = image.size
                colour += image.mode not in ("1", "L", "LA", "I", "I;16", "F")
        except OSError:  # the scan checked it; a file that changed since is the decoder's to report
            continue
        widths.append(width)
        heights.append(height)
        sides.append(min(width, height))
    if not sides:
        return ImageShapes(count=0, median_width=0, median_height=0, median_side=0, colour=0.0)
    return ImageShapes(count=len(sides), median_width=int(statistics.median(widths)),
                       median_height=int(statistics.median(heights)), median_side=int(statistics.median(sides)),
                       colour=colour / len(sides))


def auto_image_size(shapes: ImageShapes, platform: str) -> int:
    """Photos: the largest ladder size not above their median shorter side (upsampling adds
    nothing), within the platform's cap. Glyph-like images: GLYPH_SIZE."""
    if not shapes.photo:
        return GLYPH_SIZE
    cap = AUTO_SIZE_CAP.get(platform, AUTO_SIZE_CAP["cpu"])
    fitting = [s for s in SIZE_LADDER if s <= min(shapes.median_side, cap)]
    return fitting[-1] if fitting else SIZE_LADDER[0]


def largest_batch(config: SweepConfig) -> tuple[int, int]:
    """(batch size, accumulation steps) that give the fewest optimizer steps per epoch among the
    values the search space can pick."""
    batch, accum = config.train.batch_size, config.train.accum_steps
    for name, fixed in (("batch_size", batch), ("accum_steps", accum)):
        spec = config.search_space.get(name)
        values = [fixed]
        if spec is not None:
            values = [int(v) for v in spec.choices] if spec.choices else [int(spec.high or fixed)]
            for cases in (spec.by or {}).values():
                values += [int(v) for case in cases.values() for v in (case.choices or [case.high or 0])]
        if name == "batch_size":
            batch = max(values)
        else:
            accum = max(values)
    return batch, accum


def fit_epochs(config: SweepConfig, n_train: int) -> str | None:
    """Raise or lower `train.epochs` to honour min_steps/max_steps; the note saying why, or None."""
    train = config.train
    if train.min_steps is None and train.max_steps is None:
        return None
    if "epochs" in config.search_space:
        return "train.min_steps/max_steps not applied: epochs is in the search space"
    batch, accum = largest_batch(config)
    per_epoch = max(1, math.ceil(math.ceil(n_train / batch) / accum))
    epochs = train.epochs
    if train.min_steps is not None:
        epochs = max(epochs, math.ceil(train.min_steps / per_epoch))
    if train.max_steps is not None:
        epochs = max(1, min(epochs, train.max_steps // per_epoch))
    if epochs == train.epochs:
        return None
    rule = (f"min_steps {train.min_steps}" if epochs > train.epochs else f"max_steps {train.max_steps}")
    note = (f"train.epochs {train.epochs} -> {epochs}: {rule}, at {per_epoch} optimizer steps per epoch "
            f"({n_train} training images, batch {batch}{f' x {accum} accumulated' if accum > 1 else ''})")
    scheduler = config.scheduler
    if isinstance(scheduler, AshaConfig | HyperbandConfig) and scheduler.max_t == train.epochs:
        scheduler.max_t = epochs  # a whole trial, as schema.check() set it, stays a whole trial
    train.epochs = epochs
    return note


def apply(config: SweepConfig, found: Scan,
          measure_batches: Callable[[SweepConfig], dict[str, int]] | None = None) -> list[str]:
    """Resolve the data-dependent settings of `config` in place (its platform is already set in
    `resources.device`); returns one line per choice made, saying what and why.
    `measure_batches` finds the largest batch per model on the GPU (`batch_size: auto`, after the
    image size is known); without it a CUDA config assumes a batch, for a preview."""
    notes: list[str] = []
    train = config.train
    autos = [k for k in ("image_size", "augment", "hflip") if getattr(train, k) == "auto"]
    if autos:
        shapes = image_shapes(found)
        chosen: list[str] = []
        if train.image_size == "auto":
            train.image_size = auto_image_size(shapes, config.resources.device)
            chosen.append(f"image_size {train.image_size}")
        if train.augment == "auto":
            train.augment = PHOTO_AUGMENT if shapes.photo else 0.0
            chosen.append(f"augment {train.augment:g}")
        if train.hflip == "auto":
            train.hflip = shapes.photo
            chosen.append(f"hflip {'on' if train.hflip else 'off'}")
        notes.append(f"data: {shapes.describe()}: {', '.join(chosen)}")
    n_train = split_sizes(found, config.data)["train"]
    if train.batch_size == "auto":
        notes.append(auto_batch(config, n_train, measure_batches))
    note = fit_epochs(config, n_train)
    if note:
        notes.append(note)
    return notes


AUTO_BATCH_PLATFORM = {"cpu": 32, "mps": 64}  # no GPU memory to measure: the presets' batch, scaled
AUTO_BATCH_PREVIEW = 64  # CUDA before the sweep measures (the wizard's preview)
MIN_STEPS_PER_EPOCH = 8  # a batch larger than 1/8 of the training set gains no speed, only fewer steps


def auto_batch(config: SweepConfig, n_train: int,
               measure: Callable[[SweepConfig], dict[str, int]] | None) -> str:
    """`train.batch_size: auto`: each model's measured batch (capped so an epoch keeps at least
    MIN_STEPS_PER_EPOCH steps), put into the config: `train.batch_size` for the config's own
    model, and where models are searched, a `batch_size` chosen by model. The note says what."""
    platform = config.resources.device
    models = config.models()
    cap = max(1, n_train // MIN_STEPS_PER_EPOCH)
    if platform == "cuda" and measure is not None:
        found = measure(config)
        batches = {m: min(found[m], cap) for m in models}
        how = "the largest that fits on this GPU, by real training steps"
        if any(found[m] > cap for m in models):
            how += f"; at most {cap} so an epoch of {n_train} images keeps {MIN_STEPS_PER_EPOCH} steps"
    elif platform == "cuda":
        batches = dict.fromkeys(models, min(AUTO_BATCH_PREVIEW, cap))
        how = "measured on the GPU when the sweep starts"
    else:
        batches = dict.fromkeys(models, min(AUTO_BATCH_PLATFORM.get(platform, 32), cap))
        how = f"no GPU memory to measure on {platform}: its usual batch"
    train = config.train
    own = batches.get(train.model, min(batches.values()))
    train.batch_size = own
    if "model" in config.search_space and set(batches.values()) != {own}:
        config.search_space["batch_size"] = ParamSpec.model_validate({
            "choices": [own], "by": {"model": {m: {"choices": [b]} for m, b in batches.items()}}})
    return "train.batch_size auto: " + ", ".join(f"{m} {b}" for m, b in batches.items()) + f" ({how})"
