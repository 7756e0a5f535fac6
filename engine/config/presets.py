"""Where the presets live (configs/presets/*.yaml), and which there are. Light on purpose: the
CLI lists them in --help without importing the config schema."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
PRESET_DIR = CONFIG_DIR / "presets"


def preset_names() -> list[str]:
    """The presets there are: configs/presets/*.yaml."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
