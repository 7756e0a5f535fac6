"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import errno


def one_line(text: str) -> str:
    """`text` with control and other unprintable characters escaped (`\\n`, `\\x1b`, `\\udce9`):
    a newline in a path or a name must not split the error, nor an escape sequence repaint the
    terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class UserError(Exception):
    """Bad input: a config, a flag, a path. Never carries a traceback to the user."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.detail = message  # raw, so a caller can re-raise it with another source or key
        parts = [p for p in (source, key) if p]
        super().__init__(one_line(": ".join([*parts, message])))


class ConfigError(UserError):
    """A sweep config that cannot be loaded or does not validate."""


class DataError(UserError):
    """A dataset path that holds no usable images, or only one class."""


class DiskError(UserError):
    """The workspace or the database cannot be written: the disk is full, or read-only."""


DISK_FULL = "no space left on the device"
READ_ONLY = "read-only file system"
DISK_EXIT = 75  # a worker's exit code when it cannot write (EX_TEMPFAIL): the engine stops the sweep
DEVICE_EXIT = 69  # a worker's exit code when torch cannot use its device (EX_UNAVAILABLE): the same


def disk_problem(exc: BaseException | None) -> str | None:
    """DISK_FULL or READ_ONLY when `exc`, or anything it was raised from, says so (an OSError, or
    SQLite's message wrapped by SQLAlchemy and Optuna); None for anything else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return DISK_FULL
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return READ_ONLY
        text = str(exc).lower()
        if "database or disk is full" in text or "no space left" in text:
            return DISK_FULL
        if "readonly database" in text or "read-only file system" in text:
            return READ_ONLY
        exc = exc.__cause__ or exc.__context__
    return None


# ---------------------------------------------------------------- why a running trial stopped


class Interrupted(Exception):
    """The sweep was stopped (Ctrl-C, `stop`, the engine gone) while a trial ran: not the
    trial's fault, so it is queued to run again with the same parameters."""


class TrialTimeout(Exception):
    """A trial ran past `budget.trial_timeout`: it fails, and is not run again."""


class DeviceProblem(Exception):
    """torch cannot use the device the engine gave a worker (the engine planned from NVML): the
    worker exits with DEVICE_EXIT, and the engine says so in one line."""
