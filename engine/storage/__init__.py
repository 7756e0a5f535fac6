"""The database: Optuna's own schema, plus our tables beside it for what the TUI needs.

- `tables`: our `hpo_*` tables and their migrations.
- `store`: `Store`, the one writer of our tables; SQLite settings; Optuna's RDB storage.
- `studies`: the one way to open an Optuna study.
- `urls`: storage URLs, read-only viewers, passwords kept out of sight.
"""

from engine.storage.store import (
    HEARTBEAT_GRACE_S,
    HEARTBEAT_INTERVAL_S,
    Store,
    SweepRow,
    make_engine,
    optuna_storage,
)
from engine.storage.studies import find_study, load_study, study_id
from engine.storage.urls import STORAGE_ENV, default_url, mask_url, readonly_url

__all__ = [
    "HEARTBEAT_GRACE_S", "HEARTBEAT_INTERVAL_S", "STORAGE_ENV", "Store", "SweepRow", "default_url", "find_study",
    "load_study", "make_engine", "mask_url", "optuna_storage", "readonly_url", "study_id",
]
