"""What every study-reading command shares: --workdir/--storage/--study/--json, and opening
the study with one clear error when there is none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def study_options(func: Any) -> Any:
    """--workdir/--storage/--study/--json, shared by the commands that read a study."""
    for option in reversed([
        click.option("--workdir", default="runs", show_default=True, help="Workspace holding hpo.db."),
        click.option("--storage", metavar="URL", help="Any SQLAlchemy URL instead of sqlite:///WORKDIR/hpo.db."),
        click.option("--study", "study_name", help="The study (default: the most recent)."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]):
        func = option(func)
    return func


def open_study(workdir: str, storage: str | None, study_name: str | None) -> tuple[Any, str]:
    """(the Optuna study, its storage URL). A missing database is bad input, not an empty one:
    opening it would create it."""
    import optuna

    from engine.errors import UserError
    from engine.insights.summary import open_study as load
    from engine.storage import default_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or default_url(workdir)
    if storage is None and not (Path(workdir) / "hpo.db").exists():
        raise UserError(f"no database at {Path(workdir) / 'hpo.db'}: run a sweep first", key="--workdir")
    return load(url, study_name), url


def study_folder(workdir: str, name: str) -> Path:
    """DIR/<study>/, where these commands write unless told --out. A study made by plain Optuna
    may be named anything (`../x`, `a/b`): such a name is refused, never followed."""
    from engine.config import check_study_name
    from engine.errors import UserError

    try:
        check_study_name(name, "--study")
    except UserError as exc:
        raise UserError(f"{exc.detail}: write elsewhere with --out", key="--study") from None
    return Path(workdir) / name
