"""Options that several commands share, declared once."""

from __future__ import annotations

import functools
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
