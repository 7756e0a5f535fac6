"""Options that several commands share, declared once."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.storage import STORAGE_ENV, Workspace


def workspace_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--workdir and --storage (or $TUI_HPO_STORAGE, which keeps a password off the command line),
    handed to the command as one `workspace: Workspace`."""

    @functools.wraps(func)
    def command(*args: Any, workdir: str, storage: str | None, **kwargs: Any) -> Any:
        return func(*args, workspace=Workspace(Path(workdir), storage or None), **kwargs)

    command = click.option("--storage", metavar="URL", envvar=STORAGE_ENV, show_envvar=True,
                           help="Any SQLAlchemy URL instead of sqlite:///WORKDIR/hpo.db.")(command)
    return click.option("--workdir", default="runs", show_default=True,
                        help="The workspace: hpo.db and a folder per study.")(command)


def study_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--workdir/--storage, --study and --json, shared by the commands that read a study."""
    func = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)
    func = click.option("--study", "study_name", help="The study (default: the most recent).")(func)
    return workspace_options(func)


def _writable_above(path: Path) -> Path | None:
    """The nearest existing folder at or above `path` when it cannot be written, else None."""
    folder = path.resolve()
    while not folder.exists():
        folder = folder.parent
    return None if os.access(folder, os.W_OK) else folder


def check_out_file(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """--out FILE, checked before any work (a training run must not end on a path it cannot
    write): not a folder, in a folder that exists and can be written."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise click.BadParameter(f"{value} is a folder: name a file")
    if not path.resolve().parent.is_dir():
        raise click.BadParameter(f"{value}: its folder does not exist")
    if (blocked := _writable_above(path.parent)) is not None:
        raise click.BadParameter(f"{value}: {blocked} cannot be written")
    return value


def check_out_dir(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """--out DIR, checked before any work: not a file, and writable where it is or will be made."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{value} is a file: name a folder")
    if (blocked := _writable_above(path)) is not None:
        raise click.BadParameter(f"{value}: {blocked} cannot be written")
    return value
