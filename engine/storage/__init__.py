"""The database: Optuna's own schema, plus our tables beside it for what the TUI needs.

- `tables`: our `hpo_*` tables and their migrations.
- `store`: `Store`, the one writer of our tables; SQLite settings; Optuna's RDB storage.
- `studies`: the one way to open an Optuna study.
- `optuna_sql`: plain SQL on Optuna's own tables, the one module that knows their layout.
- `states`: sweep, worker and event words as stored; what counts as done; the ETA.
- `urls`: storage URLs and the `Workspace`, read-only viewers, passwords kept out of sight.

The names below load their module on first use (PEP 562), so a command that only needs a
`Workspace` does not import SQLAlchemy at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "HEARTBEAT_GRACE_S": "store", "HEARTBEAT_INTERVAL_S": "store", "Store": "store", "SweepRow": "store",
    "make_engine": "store", "optuna_storage": "store",
    "STUDY_ATTR": "studies", "check_ours": "studies", "find_study": "studies", "load_study": "studies",
    "study_facts": "studies", "study_id": "studies",
    "STORAGE_ENV": "urls", "Workspace": "urls", "default_url": "urls", "mask_url": "urls", "readonly_url": "urls",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'engine.storage' has no attribute {name!r}")
    return getattr(importlib.import_module(f"engine.storage.{_HOMES[name]}"), name)
