"""Pretrained weights in the local Hugging Face cache, found without importing torch or timm.

timm keeps its pretrained weights on the Hugging Face hub (`timm/<model>.<tag>`) and loads them
through `huggingface_hub`, which caches them under `$HF_HOME/hub` in its own layout:
`models--timm--<model>.<tag>/refs/main` names a commit, `snapshots/<commit>/model.safetensors`
is the file. The engine asks `cached_weights` whether a repository's file is there (the repository
id comes from timm's pretrained cfg, which only the engine's model check imports); the wizard asks
`cached_timm_models` which architectures have any weights there, to mark them in its model list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# What timm loads from a hub repository, in the order it tries them (timm.models._hub).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads its boolean variables


def hub_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where huggingface_hub caches repositories: HF_HUB_CACHE, else HF_HOME/hub, else
    XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether HF_HUB_OFFLINE forbids huggingface_hub to reach the network."""
    env = os.environ if environ is None else environ
    return env.get("HF_HUB_OFFLINE", "").strip().upper() in TRUE_VALUES


def repo_folder(repo_id: str, hub: Path | None = None) -> Path:
    """The cache folder of a model repository (`timm/resnet18.a1_in1k` -> `models--timm--resnet18.a1_in1k`)."""
    return (hub or hub_dir()) / ("models--" + repo_id.split("@", 1)[0].replace("/", "--"))


def cached_weights(repo_id: str, filenames: tuple[str, ...] = WEIGHT_FILES, hub: Path | None = None) -> Path | None:
    """The first of `filenames` cached for `repo_id` (`owner/name`, optionally `@revision`) at the
    revision huggingface_hub would load offline, or None. Reads the cache; never downloads."""
    folder = repo_folder(repo_id, hub)
    revision = repo_id.split("@", 1)[1] if "@" in repo_id else "main"
    try:
        commit = (folder / "refs" / revision).read_text(encoding="utf-8").strip()
    except OSError:
        commit = revision  # a commit hash names its snapshot directly
    for name in filenames:
        path = folder / "snapshots" / commit / name
        if path.is_file():
            return path
    return None


def cached_timm_models(hub: Path | None = None) -> set[str]:
    """timm models with weights in the cache: each repository's name (`resnet18.a1_in1k`) and its
    architecture (`resnet18`). An architecture is listed when any of its tags is cached, which
    may not be the tag timm loads by default; the engine's check before a sweep is exact."""
    found: set[str] = set()
    try:
        folders = list((hub or hub_dir()).glob("models--timm--*"))
    except OSError:
        return found
    for folder in folders:
        name = folder.name.removeprefix("models--timm--")
        if cached_weights(f"timm/{name}", hub=folder.parent):
            found |= {name, name.split(".", 1)[0]}
    return found
