"""Study names: the rule every name must pass, and the one function that decides a sweep's name."""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import ConfigError

STUDY_NAME_MAX_BYTES = 200  # a folder name (255 bytes at most), with room for `.engine-<name>.out`


def check_study_name(name: str, key: str) -> str:
    """`name`, if it can name a study; else a ConfigError for `key` (`--study`, `name`, ...).

    A study's files go to `DIR/<study>/`, so its name must be one plain folder name: no
    separator, no `.`/`..`, nothing absolute, no control characters (which also keep the TUI,
    the logs and every error on one line), valid UTF-8 for the storage. Every way a name comes
    in (`--study`, the config's `name:`, the config's file name, a study found in the storage)
    is checked here.
    """
    problem = None
    if not name.strip():
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is not a folder name"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif name.startswith("."):
        problem = "starts with '.' (DIR/.<name>/ holds the workspace's caches)"
    elif not name.isprintable():
        problem = "contains control or invisible characters, or bytes that are not UTF-8"
    elif len(name.encode("utf-8")) > STUDY_NAME_MAX_BYTES:
        problem = f"is longer than {STUDY_NAME_MAX_BYTES} bytes"
    if problem:
        shown = name if len(name) <= 60 else f"{name[:57]}..."
        raise ConfigError(f"study name {shown!r} {problem} (it names the study's folder, DIR/<study>/)", key=key)
    return name


def slug(text: str) -> str:
    """A display name made into a study name: `ResNet sweep 2/3: lr + wd` -> `ResNet-sweep-2-3-lr-wd`.
    Letters, digits, `.`, `_` and `-` stay; every other run of characters becomes one `-`."""
    out = re.sub(r"[^\w.-]+", "-", text, flags=re.ASCII).strip("-.")
    return out.encode("utf-8")[:STUDY_NAME_MAX_BYTES].decode("utf-8", "ignore").rstrip("-.")


def default_study_name(config_name: str | None, config_file: str | None, preset: str | None) -> str | None:
    """The config's name when it sets none: a slug of the config file's name (None when nothing
    of it is left, `...yaml`), else the preset's name."""
    if config_name:
        return config_name
    if config_file:
        return slug(Path(config_file).stem) or None
    return preset or "quick"


def study_name(flag: str | None, config_name: str | None, source: str | None = None) -> str:
    """The one rule for a sweep's study name, used by `run` (headless and in the app) and the
    wizard: `--study` when given, else the resolved config's `name:` (which `resolve` sets from
    the file's name or the preset when the file has none). `source`: the config file, for errors."""
    if flag is not None:
        return check_study_name(flag, "--study")
    if not config_name:
        raise ConfigError("study name cannot be made from the config file's name (it names the study's folder, "
                          "DIR/<study>/): set name: in the file, or give --study", source=source, key="name")
    try:
        return check_study_name(config_name, "name")
    except ConfigError as exc:
        raise ConfigError(exc.detail, source=source, key="name") from None
