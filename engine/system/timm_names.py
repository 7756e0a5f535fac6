"""The model names the installed timm knows, remembered in the user's cache per timm version, and
the one message for a name it does not know.

Listing them takes importing timm, and so torch: seconds of a process that may have no other use
for either (a `tui-hpo run` with a typo in its model name, the wizard's model list, the TUI, which
never imports torch). So whoever has timm imported anyway writes the list (`remember`), and a name
missing from the list of the installed version is unknown at once (`unknown_model`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
from collections.abc import Sequence
from importlib import metadata

from engine.artifacts import user_cache_dir, write_atomic
from engine.errors import ConfigError

CACHE_FILE = "timm-models.json"
HINTS = 5  # similar names offered with an unknown one


def _version() -> str | None:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


def known() -> list[str] | None:
    """timm's model names (architectures, sorted as `timm.list_models()` sorts them), as listed for
    the installed timm; None when not listed yet, listed for another version, or timm is missing."""
    version = _version()
    try:
        saved = json.loads((user_cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if version is None or not isinstance(saved, dict) or saved.get("timm") != version:
        return None
    names = saved.get("names")
    return names if isinstance(names, list) and names else None


def remember(names: Sequence[str]) -> None:
    """Keep `timm.list_models()` for the installed timm; a cache that cannot be written costs the
    next check its import, nothing more."""
    version = _version()
    if version is None or not names or known() == list(names):
        return
    with contextlib.suppress(OSError):
        write_atomic(user_cache_dir() / CACHE_FILE, json.dumps({"timm": version, "names": list(names)}) + "\n")


def is_known(name: str, names: Sequence[str] | set[str]) -> bool:
    """As `timm.is_model`: the architecture counts, a pretrained tag (`resnet18.a1_in1k`) is the
    weights' business."""
    return name.split(".", 1)[0] in names


def unknown_model(name: str, names: Sequence[str], key: str) -> ConfigError:
    """The error for a model name timm does not know, with the names most like it (those sharing
    its first word, as `timm.list_models('*word*')` finds them)."""
    near = fnmatch.filter(names, f"*{name.split('_')[0]}*")[:HINTS]
    hint = f" (similar: {', '.join(near)})" if near else ""
    return ConfigError(f"unknown timm model '{name}'{hint}", key=key)
