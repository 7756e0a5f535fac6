"""Models by name from timm: built, checked before a study exists, and saved with what a later
load needs."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
import torch.nn as nn

from engine.config import SweepConfig, TrainConfig
from engine.errors import ConfigError
from engine.system import hf_cache, timm_names

log = logging.getLogger("tui_hpo.worker")


def weights_file(cfg: TrainConfig) -> str | None:
    """The checkpoint `cfg.model` starts from: `train.weights`, or its entry in a per-model map."""
    if isinstance(cfg.weights, dict):
        return cfg.weights.get(cfg.model)
    return cfg.weights


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """A timm model by name, with its head sized for `num_classes`: weights from its file in
    `train.weights`, else timm's pretrained weights (`train.pretrained`, through the Hugging Face
    cache: `check_pretrained` made sure they are there before the sweep), else random."""
    kwargs = dict(cfg.model_kwargs)
    kwargs.update(num_classes=num_classes, drop_rate=cfg.dropout)
    optional = {"drop_path_rate": cfg.drop_path, "img_size": cfg.image_size}
    file = weights_file(cfg)
    if cfg.pretrained and not file:
        # timm drops the pretrained head when num_classes differs; the cache is the one checked
        kwargs.update(pretrained=True, cache_dir=hf_cache.hub_dir())
    while True:
        try:
            model = timm.create_model(cfg.model, **kwargs, **optional)
            break
        except TypeError as exc:  # the architecture does not take one of the optional arguments
            dropped = next((k for k in optional if k in str(exc)), None)
            if dropped is None:
                raise
            optional.pop(dropped)
    if file:
        load_weights(model, file, cfg.model)
    return model


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier head's parameters (timm's `get_classifier()`); none for a model without one."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return list(head.parameters()) if isinstance(head, nn.Module) else []


def load_weights(model: nn.Module, path: str, name: str) -> None:
    """A .safetensors or .pt/.pth state dict (bare, or under `state_dict`/`model` as timm and our
    own checkpoints keep it) into `model`. A head of another shape (other classes) is left as
    built, freshly initialised, and the log says so; any other mismatch is an error."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(path, weights_only=True)
    except Exception as exc:  # a damaged file, or a checkpoint that holds objects besides tensors
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"cannot read {path} as weights: {why}", key="train.weights") from None
    own = model.state_dict()
    head = {id(p) for p in head_parameters(model)}
    head_keys = {k for k, p in model.named_parameters() if id(p) in head}
    resized = sorted(k for k in head_keys if k in state and state[k].shape != own[k].shape)
    for key in resized:
        state.pop(key)
    if resized:
        log.info("%s: the head in %s has another shape (%s), not the data's classes: reinitialised",
                 name, path, ", ".join(f"{k} {tuple(own[k].shape)}" for k in resized))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in resized]
    if missing or unexpected:
        raise ConfigError(f"weights file {path} does not fit model '{name}': {len(missing)} missing key(s) "
                          f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}", key="train.weights")


def pretrained_source(name: str) -> tuple[str, tuple[str, ...]] | None:
    """Where timm loads `name`'s pretrained weights from: (Hugging Face repository, the file names
    it tries), or None when timm has no hub weights for it."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    return cfg.hf_hub_id, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else hf_cache.WEIGHT_FILES


def check_pretrained(names: list[str]) -> None:
    """Each model's pretrained weights are in the Hugging Face cache, or are fetched into it now,
    once, before the study exists (not by every worker): only when the user asked for them and
    HF_HUB_OFFLINE is not set. Offline and not cached is a ConfigError naming the cache path."""
    hub = hf_cache.hub_dir()
    for name in names:
        source = pretrained_source(name)
        if source is None:
            raise ConfigError(f"timm has no pretrained weights on the Hugging Face hub for '{name}': set "
                              "train.weights to a file, or pretrained: false", key="train.pretrained")
        repo, files = source
        if hf_cache.cached_weights(repo, files, hub) is not None:
            continue
        if hf_cache.offline():
            raise ConfigError(f"no pretrained weights for '{name}' in the Hugging Face cache "
                              f"{hf_cache.repo_folder(repo, hub)} and HF_HUB_OFFLINE is set: run once online, "
                              "or set train.weights to a file", key="train.pretrained")
        _download(name, repo, files, hub)


def _download(name: str, repo: str, files: tuple[str, ...], hub: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    log.info("downloading pretrained weights for %s (%s) into %s", name, repo, hub)
    repo_id, _, revision = repo.partition("@")
    for i, file in enumerate(files):
        try:
            hf_hub_download(repo_id, file, revision=revision or None, cache_dir=hub)
            return
        except EntryNotFoundError:
            if i == len(files) - 1:
                raise ConfigError(f"'{repo}' on the Hugging Face hub has none of {', '.join(files)}",
                                  key="train.pretrained") from None
        except Exception as exc:  # no network, a proxy, a gated repository: one line, before the study
            raise ConfigError(f"cannot download pretrained weights for '{name}' ({repo}): {exc}",
                              key="train.pretrained") from None


def list_timm_models() -> timm_names.Listed:
    """timm's model names, listed where timm is imported anyway and remembered for the processes
    that need not import it (engine.system.timm_names)."""
    listed = timm_names.Listed(timm.list_models(), sorted(timm.models.get_deprecated_models()))
    timm_names.remember(listed)
    return listed


def check_models(config: SweepConfig) -> None:
    """Every model the sweep can pick must exist in timm and build with the config's arguments.

    Built on the meta device (no memory, no weights), before any study exists, so a typo in
    `model_kwargs` is an input error and not a string of failed trials. The engine calls it through
    `engine.sweep.model_cache`, which also checks the weights file."""
    for i, name in enumerate(config.models()):
        if not timm.is_model(name):
            raise timm_names.unknown_model(name, list_timm_models().names, config.model_key(i))
    list_timm_models()
    for name in config.models():
        try:
            with torch.device("meta"):
                build_model(config.train.model_copy(update={"model": name, "weights": None, "pretrained": False}),
                            num_classes=2)
        except Exception as exc:
            raise ConfigError(f"model '{name}' cannot be built: {exc}", key="train.model_kwargs") from None
