"""The engine runs without the UI; the CLI/TUI starts without torch."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return set(out.stdout.split())


def test_engine_never_imports_textual() -> None:
    loaded = modules_after("import engine.sweep, engine.worker, engine.store, engine.results")
    assert "textual" not in loaded and not any(m.startswith("tui_hpo") for m in loaded)


def test_cli_starts_without_torch() -> None:
    loaded = modules_after("import tui_hpo.cli, tui_hpo.headless")
    assert not {"torch", "timm", "torchvision"} & loaded


def test_help_is_fast_and_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for command in ("run", "info", "train", "worker"):
        assert command in out.stdout
    for command in ("run", "info", "train", "worker"):
        sub = subprocess.run([sys.executable, "-m", "tui_hpo.cli", command, "--help"], capture_output=True,
                             text=True, cwd=ROOT)
        assert sub.returncode == 0 and "Usage:" in sub.stdout


def test_info_never_raises_and_reports_json() -> None:
    import json

    out = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "info", "--json"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["logical_cores"] >= 1 and report["ram_total_gb"] > 0
    assert report["platform"] in ("cpu", "cuda", "mps") and "profile" in report
    table = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "info"], capture_output=True, text=True, cwd=ROOT)
    assert table.returncode == 0 and "Profile:" in table.stdout
