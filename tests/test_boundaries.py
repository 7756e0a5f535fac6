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
    loaded = modules_after("import engine.sweep.engine, engine.sweep.worker, engine.storage, engine.insights.results")
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


def test_the_running_tui_never_imports_torch(tmp_path) -> None:
    """Every screen visited in a real (headless) app process; torch must stay out of sys.modules."""
    script = f"""
import asyncio, sys
from pathlib import Path
from tests.studies import make_study
make_study(Path({str(tmp_path)!r}), n_trials=6, running=1)
from tui_hpo.app import make_app
async def main():
    app = make_app(workdir={str(tmp_path)!r})
    async with app.run_test(size=(120, 40)) as pilot:
        for key in "1234565":
            await pilot.press(key)
            await pilot.pause(1.0)
asyncio.run(main())
print(sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
