"""Where the Ray tier keeps its files in the study's folder (`DIR/<study>/ray/`), read by the
driver and by the trainables of a local Ray (or of a cluster whose nodes share that folder).
"""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = "ray"  # Tune's experiments: round-1, round-2, ...
NUMBERS = Path(EXPERIMENTS) / "numbers"  # the Optuna trial number of each Ray trial (the search algorithm's)
PACKAGES = Path(EXPERIMENTS) / "packages"  # a finished trial's model, until the recorder keeps or drops it


def number_file(folder: Path, ray_trial: str) -> Path:
    return folder / NUMBERS / ray_trial


def package_file(folder: Path, number: int) -> Path:
    return folder / PACKAGES / f"trial_{number}.safetensors"
