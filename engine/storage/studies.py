"""Opening an Optuna study: the one place that does it, through Optuna's public storage API.

Everything that reads or runs a study (the engine, workers, recovery, the CLI's study commands,
the Analysis screen) opens it here, so the storage settings (busy timeout, heartbeats) and the
errors a user sees are the same everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import UserError, disk_problem
from engine.storage.store import optuna_storage
from engine.storage.urls import mask_url

if TYPE_CHECKING:
    import optuna

# The study user attribute under which tui-hpo keeps its own facts about a study (the metrics'
# names, the data split, the test score). A study without it was not made by tui-hpo.
STUDY_ATTR = "tui_hpo"


def study_facts(study: optuna.Study) -> dict[str, Any]:
    """What tui-hpo recorded on `study` (empty for a plain Optuna study)."""
    return study.user_attrs.get(STUDY_ATTR) or {}


def check_ours(storage: Any, name: str) -> bool:
    """Whether study `name` exists in `storage`; one line (UserError) when it exists but tui-hpo
    did not make it (a plain Optuna study): tui-hpo reads such a study, but never runs or resumes
    trials into one whose objective it does not know."""
    try:
        sid = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    if STUDY_ATTR not in storage.get_study_user_attrs(sid):
        raise UserError(f"study '{name}' was not made by tui-hpo: it reads it (summary, top, visualize) but does not "
                        "run trials into it; name a new study with --study", key="--study")
    return True


def study_id(storage: Any, name: str) -> int:
    """The storage's id of study `name` (Optuna's public `get_study_id_from_name`)."""
    return storage.get_study_id_from_name(name)


def load_study(url: str, name: str, *, storage: Any = None, sampler: Any = None, pruner: Any = None,
               readonly: bool = False) -> optuna.Study:
    """Study `name` on `url`. Pass `storage` to share one (a worker's, with heartbeats); otherwise
    one without heartbeats, or with `readonly` one that never writes (the app's)."""
    import optuna

    storage = storage if storage is not None else optuna_storage(url, heartbeat=False, readonly=readonly)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def find_study(url: str, name: str | None) -> optuna.Study:
    """The named study, or the most recent one; one clear line when there is none."""
    try:
        storage = optuna_storage(url, heartbeat=False)
        studies = storage.get_all_studies()
    except UserError:  # said already, in one line
        raise
    except Exception as exc:  # no database, not an Optuna one, a server that is down
        reason = disk_problem(exc) or str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise UserError(f"cannot open the storage {mask_url(url)}: {reason}", key="--storage") from None
    if not studies:
        raise UserError("no study in this storage yet: run a sweep first", key="--study")
    names = [s.study_name for s in studies]
    if name is None:
        name = max(names, key=lambda n: study_id(storage, n))
    elif name not in names:
        known = ", ".join(sorted(names)[:10])
        raise UserError(f"no study named '{name}' (known: {known})", key="--study")
    return load_study(url, name, storage=storage)
