"""Regenerate screenshots/ from a real sweep: every screen at 120x40, the dashboard at 80x24.

Starts a quick sweep on the embedded digits in a temporary workspace, waits until some trials
have finished while others run, then drives the real app headless and saves an SVG per screen.
Run: .venv/bin/python scripts/export_screenshots.py   (then rsvg-convert to look at them)
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "screenshots"


def counts(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    except sqlite3.Error:
        return {}


async def shoot(workdir: Path) -> None:
    from tui_hpo.app import make_app
    from tui_hpo.widgets.trial_table import TrialTable

    app = make_app(workdir=workdir, study="quick")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(3)
        app.save_screenshot("3-dashboard.svg", path=str(OUT))
        table = app.screen.query_one(TrialTable)
        table.move_cursor(row=0)
        await pilot.press("enter")
        await pilot.pause(2)
        app.save_screenshot("4-trial.svg", path=str(OUT))
        await pilot.press("escape", "1")
        await pilot.pause(3)
        app.save_screenshot("1-system.svg", path=str(OUT))
        await pilot.press("2")
        await pilot.pause(4)
        app.save_screenshot("2-wizard.svg", path=str(OUT))
        await pilot.press("5")
        await pilot.pause(2)
        app.save_screenshot("5-studies.svg", path=str(OUT))
        await pilot.press("6")
        for _ in range(60):  # the analysis loads in a thread, slower while the sweep trains beside it
            await pilot.pause(0.5)
            if app.screen.query_one("#analysis-table").row_count:
                break
        await pilot.pause(1)
        app.save_screenshot("6-analysis.svg", path=str(OUT))
        await pilot.press("3", "q")
        await pilot.pause(1)
        app.save_screenshot("quit-while-running.svg", path=str(OUT))
        await pilot.press("escape", "question_mark")
        await pilot.pause(1)
        app.save_screenshot("help.svg", path=str(OUT))
    small = make_app(workdir=workdir, study="quick")
    async with small.run_test(size=(80, 24)) as pilot:
        await pilot.pause(3)
        small.save_screenshot("3-dashboard-80x24.svg", path=str(OUT))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.svg"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "runs"
        env = {**os.environ, "TUI_HPO__TRAIN__EPOCHS": "6"}
        engine = subprocess.Popen([sys.executable, "-m", "tui_hpo.cli", "run", "--preset", "quick", "--n-trials", "14",
                                   "--workdir", str(workdir), "--no-tui"], env=env, stdout=subprocess.DEVNULL, cwd=ROOT)
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                c = counts(workdir / "hpo.db")
                if c.get("COMPLETE", 0) + c.get("PRUNED", 0) >= 6 and c.get("RUNNING", 0):
                    break
                time.sleep(0.5)
            asyncio.run(shoot(workdir))
        finally:
            engine.terminate()
            engine.wait(timeout=60)
    print("\n".join(sorted(p.name for p in OUT.glob("*.svg"))))


if __name__ == "__main__":
    main()
