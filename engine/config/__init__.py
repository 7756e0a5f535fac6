"""The sweep config: its schema, the layers it is resolved from, the foreign formats users bring
(W&B sweep files, the Optuna guide's layout), the search space, and the study-name rule.

- `schema`: sections and keys, bounds, the rules across keys (`SweepConfig`, `validate`).
- `layers`: presets, `extends:`, files, `TUI_HPO__*` environment, flags -> `resolve()`.
- `files`: safe YAML reading and writing.
- `formats`: W&B and Optuna-guide layouts mapped onto ours.
- `space`: search-space specs and how a trial samples them.
- `names`: the study-name rule and the one function that decides a sweep's name.
- `presets`: where the presets live.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "SafeDumper": "files", "parse_yaml": "files", "read_yaml_file": "files",
    "CONFIG_DIR": "presets", "PRESET_DIR": "presets", "preset_names": "presets",
    "ENV_PREFIX": "layers", "apply_batch_multiplier": "layers", "deep_merge": "layers", "env_layer": "layers",
    "flags_layer": "layers",
    "load_layer": "layers", "preset_path": "layers", "resolve": "layers", "to_native": "layers",
    "check_study_name": "names", "slug": "names", "study_name": "names",
    "METRIC_DIRECTIONS": "schema", "PRUNERS": "schema", "SAMPLERS": "schema", "TUNABLE": "schema",
    "DataConfig": "schema", "ResourcesConfig": "schema", "SweepConfig": "schema", "TrainConfig": "schema",
    "canonical_metric": "schema", "validate": "schema",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Each name loads its module on first use (PEP 562): `--help` does not import pydantic."""
    if name not in _HOMES:
        raise AttributeError(f"module 'engine.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"engine.config.{_HOMES[name]}"), name)
