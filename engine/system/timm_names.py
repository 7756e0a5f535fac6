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
from typing import NamedTuple

from engine.artifacts import user_cache_dir, write_atomic
from engine.errors import ConfigError

CACHE_FILE = "timm-models.json"
HINTS = 5  # similar names offered with an unknown one


def _version() -> str | None:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


class Listed(NamedTuple):
    names: list[str]  # `timm.list_models()`: architectures, in timm's order
    deprecated: list[str]  # older names timm still takes (`timm.models.get_deprecated_models()`)

    def knows(self, name: str) -> bool:
        """As `timm.is_model`: the architecture counts, a pretrained tag (`resnet18.a1_in1k`) is
        the weights' business; a deprecated name is still a model."""
        arch = name.split(".", 1)[0]
        return arch in set(self.names) or arch in set(self.deprecated)


def known() -> Listed | None:
    """timm's model names as listed for the installed timm; None when not listed yet, listed for
    another version, or timm is missing."""
    version = _version()
    try:
        saved = json.loads((user_cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if version is None or not isinstance(saved, dict) or saved.get("timm") != version:
        return None
    names, deprecated = saved.get("names"), saved.get("deprecated")
    if not isinstance(names, list) or not names or not isinstance(deprecated, list):
        return None
    return Listed(names, deprecated)


def remember(listed: Listed) -> None:
    """Keep what timm lists, for the installed timm; a cache that cannot be written costs the
    next check its import, nothing more."""
    version = _version()
    if version is None or not listed.names or known() == listed:
        return
    with contextlib.suppress(OSError):
        write_atomic(user_cache_dir() / CACHE_FILE,
                     json.dumps({"timm": version, **listed._asdict()}) + "\n")


def unknown_model(name: str, names: Sequence[str], key: str) -> ConfigError:
    """The error for a model name timm does not know, with the names most like it (those sharing
    its first word, as `timm.list_models('*word*')` finds them)."""
    near = fnmatch.filter(names, f"*{name.split('_')[0]}*")[:HINTS]
    hint = f" (similar: {', '.join(near)})" if near else ""
    return ConfigError(f"unknown timm model '{name}'{hint}", key=key)
