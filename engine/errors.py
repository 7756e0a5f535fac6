"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config, a flag, a path. Never carries a traceback to the user."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.detail = message
        parts = [p for p in (source, key) if p]
        super().__init__(": ".join([*parts, message]))


class ConfigError(UserError):
    """A sweep config that cannot be loaded or does not validate."""


class DataError(UserError):
    """A dataset path that holds no usable images, or only one class."""
