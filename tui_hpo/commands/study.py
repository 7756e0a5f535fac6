"""What every study-reading command shares: finding the study, and where it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.storage import Workspace


def study_from(workspace: Workspace, study_name: str | None) -> Any:
    """The named study of the workspace, or its most recent one; one clear line when there is none."""
    import optuna

    from engine.storage import find_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workspace.require_database()
    return find_study(workspace.url, study_name)


def study_folder(workspace: Workspace, name: str) -> Path:
    """DIR/<study>/, where these commands write unless told --out. A study made by plain Optuna
    may be named anything (`../x`, `a/b`): such a name is refused, never followed."""
    from engine.config import check_study_name
    from engine.errors import UserError

    try:
        check_study_name(name, "--study")
    except UserError as exc:
        raise UserError(f"{exc.detail}: write elsewhere with --out", key="--study") from None
    return workspace.workdir / name
