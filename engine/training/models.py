"""Models by name from timm: built, checked before a study exists, and saved with what a later
load needs."""

from __future__ import annotations

import io
from typing import Any

import timm
import torch
import torch.nn as nn

from engine.config import SweepConfig, TrainConfig
from engine.errors import ConfigError


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """A timm model by name, never downloading: weights only from `train.weights` on disk."""
    kwargs = dict(cfg.model_kwargs)
    kwargs.update(num_classes=num_classes, drop_rate=cfg.dropout)
    optional = {"drop_path_rate": cfg.drop_path, "img_size": cfg.image_size}
    if cfg.weights:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": cfg.weights})
    while True:
        try:
            return timm.create_model(cfg.model, **kwargs, **optional)
        except TypeError as exc:  # the architecture does not take one of the optional arguments
            dropped = next((k for k in optional if k in str(exc)), None)
            if dropped is None:
                raise
            optional.pop(dropped)


def check_models(config: SweepConfig) -> None:
    """Every model the sweep can pick must exist in timm and build with the config's arguments.

    Built on the meta device (no memory, no weights), before any study exists, so a typo in
    `model_kwargs` is an input error and not a string of failed trials. The engine calls it through
    `engine.sweep.model_cache`, which also checks the weights file."""
    for i, name in enumerate(config.models()):
        if not timm.is_model(name):
            near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            hint = f" (similar: {', '.join(near)})" if near else ""
            key = "search_space.model.choices" + (f"[{i}]" if "model" in config.search_space else "")
            raise ConfigError(f"unknown timm model '{name}'{hint}",
                              key=key if "model" in config.search_space else "train.model")
    for name in config.models():
        try:
            with torch.device("meta"):
                build_model(config.train.model_copy(update={"model": name, "weights": None}), num_classes=2)
        except Exception as exc:
            raise ConfigError(f"model '{name}' cannot be built: {exc}", key="train.model_kwargs") from None


def serialize(model: Any, meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in getattr(model, "_orig_mod", model).state_dict().items()}
    torch.save({"meta": meta, "state_dict": state}, buffer)
    return buffer.getvalue()


