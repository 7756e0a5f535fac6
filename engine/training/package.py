"""A trained model that stands alone: one `.safetensors` file holding the weights, and in its
header (safetensors' `metadata`, one JSON string under "tui_hpo") what inference needs: the
timm model name and arguments, the class names, the image size and how images were decoded,
the normalisation statistics, the training config and the metrics.

Anyone can load it without tui-hpo (safetensors + timm + json, see the README); `load_package`
does it here with one-line errors for a missing, corrupt or foreign file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from engine.artifacts import write_atomic
from engine.errors import UserError

KEY = "tui_hpo"  # the header metadata key holding the JSON
FORMAT = 1
REQUIRED = ("model", "model_kwargs", "classes", "image_size", "mean", "std")


@dataclass(frozen=True)
class Package:
    """What a package says about its model; `meta` is the JSON as stored."""

    model: str
    model_kwargs: dict[str, Any]  # for timm.create_model, num_classes (and img_size where taken) included
    classes: tuple[str, ...]
    image_size: int
    decode_size: int  # images were decoded at this size, then resized to image_size (as in training)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def normalisation(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as (1, 3, 1, 1) float32 tensors, bit for bit the training run's."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return mean.to(device), std.to(device)


def inference_kwargs(model: str, model_kwargs: dict[str, Any], num_classes: int, image_size: int) -> dict[str, Any]:
    """The timm.create_model arguments that rebuild the architecture trained: the config's
    model_kwargs, the class count, and img_size where the architecture takes it (as `build_model`
    passed it). Checked on the meta device: no memory, no weights."""
    kwargs = {**model_kwargs, "num_classes": num_classes}
    try:
        with torch.device("meta"):
            timm.create_model(model, **kwargs, img_size=image_size)
        kwargs["img_size"] = image_size
    except TypeError:  # the architecture does not take img_size
        pass
    return kwargs


def package_meta(*, train: dict[str, Any], data: dict[str, Any], classes: list[str], image_size: int,
                 decode_size: int, mean: torch.Tensor, std: torch.Tensor, metrics: dict[str, Any],
                 **extra: Any) -> dict[str, Any]:
    """The header JSON of a package, from a run's train config (as a dict), data config, classes,
    sizes and normalisation statistics; `extra` (trial, value, study, ...) is kept beside."""
    return {
        "format": FORMAT, "model": train["model"],
        "model_kwargs": inference_kwargs(train["model"], dict(train.get("model_kwargs") or {}), len(classes),
                                         image_size),
        "classes": list(classes), "image_size": image_size, "decode_size": decode_size,
        # float32 -> Python float -> JSON -> float32 is exact: predictions normalise bit for bit as training did
        "mean": [float(v) for v in mean.flatten().tolist()], "std": [float(v) for v in std.flatten().tolist()],
        "train": train, "data": data, "metrics": metrics, **extra,
    }


def package_bytes(model: nn.Module, meta: dict[str, Any]) -> bytes:
    """The package file's bytes: the model's weights (on the CPU) and `meta` in the header."""
    from safetensors.torch import save

    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    # Cloned: safetensors refuses tensors that share storage (tied weights); each is saved whole.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    return save(state, metadata={KEY: json.dumps(meta)})


def save_package(path: Path | str, model: nn.Module, meta: dict[str, Any]) -> None:
    write_atomic(Path(path), package_bytes(model, meta))


def read_meta(path: Path | str) -> Package:
    """The package's description, without building the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise UserError("no such file", source=str(path), key="--model")
    if not path.is_file():
        raise UserError("is not a file", source=str(path), key="--model")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as exc:  # SafetensorError, or a header that is not JSON: a truncated or foreign file
        hint = " (an old best_model.pt? train again or re-run the sweep)" if path.suffix == ".pt" else ""
        raise UserError(f"not a safetensors file, or a corrupt one{hint}: {exc.__class__.__name__}",
                        source=str(path), key="--model") from None
    if KEY not in header:
        raise UserError("not a tui-hpo package (its safetensors header has no 'tui_hpo' metadata)",
                        source=str(path), key="--model")
    try:
        meta = json.loads(header[KEY])
        missing = [k for k in REQUIRED if k not in meta]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return Package(model=str(meta["model"]), model_kwargs=dict(meta["model_kwargs"]),
                       classes=tuple(str(c) for c in meta["classes"]), image_size=int(meta["image_size"]),
                       decode_size=int(meta.get("decode_size") or meta["image_size"]),
                       mean=tuple(float(v) for v in meta["mean"]), std=tuple(float(v) for v in meta["std"]),
                       train=dict(meta.get("train") or {}), data=dict(meta.get("data") or {}),
                       metrics=dict(meta.get("metrics") or {}), meta=meta)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"corrupt tui-hpo package metadata ({exc})", source=str(path), key="--model") from None


def load_package(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, Package]:
    """(the model in eval mode on `device`, its Package). Never downloads: the weights are the file's."""
    from safetensors.torch import load_file

    package = read_meta(path)
    if not timm.is_model(package.model):
        raise UserError(f"the package's model '{package.model}' is not in this timm ({timm.__version__})",
                        source=str(path), key="--model")
    try:
        model = timm.create_model(package.model, pretrained=False, **package.model_kwargs)
        model.load_state_dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # weights that do not fit the architecture, a truncated tensor section
        raise UserError(f"the weights do not load into {package.model}: {str(exc).splitlines()[0][:200]}",
                        source=str(path), key="--model") from None
    return model.to(device).eval(), package
