"""The sweep config: its schema, the layers it is resolved from, the foreign formats users bring
(W&B sweep files, the Optuna guide's layout), the search space, and the study-name rule.

- `schema`: sections and keys, bounds, the rules across keys (`SweepConfig`, `validate`).
- `layers`: presets, `extends:`, files, `TUI_HPO__*` environment, flags -> `resolve()`.
- `files`: safe YAML reading and writing.
- `formats`: W&B and Optuna-guide layouts mapped onto ours.
- `space`: search-space specs and how a trial samples them.
- `names`: the study-name rule and the one function that decides a sweep's name.
"""

from engine.config.files import SafeDumper, parse_yaml, read_yaml_file
from engine.config.layers import (
    ENV_PREFIX,
    PRESET_DIR,
    deep_merge,
    env_layer,
    flags_layer,
    load_layer,
    preset_path,
    resolve,
    to_native,
)
from engine.config.names import check_study_name, slug, study_name
from engine.config.schema import (
    METRIC_DIRECTIONS,
    PRUNERS,
    SAMPLERS,
    TUNABLE,
    DataConfig,
    ResourcesConfig,
    SweepConfig,
    TrainConfig,
    canonical_metric,
    validate,
)

__all__ = [
    "ENV_PREFIX", "METRIC_DIRECTIONS", "PRESET_DIR", "PRUNERS", "SAMPLERS", "TUNABLE", "DataConfig",
    "ResourcesConfig", "SafeDumper", "SweepConfig", "TrainConfig", "canonical_metric", "check_study_name",
    "deep_merge", "env_layer", "flags_layer", "load_layer", "parse_yaml", "preset_path", "read_yaml_file",
    "resolve", "slug", "study_name", "to_native", "validate",
]
