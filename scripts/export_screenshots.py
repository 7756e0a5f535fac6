"""Regenerate screenshots/ from real sweeps: every screen at 120x40, the dashboard at 80x24, and
a program's trial (objective.command) with its output log at both sizes.

Starts a quick sweep on the embedded digits in a temporary workspace, waits until some trials
have finished while others run, then drives the real app headless and saves an SVG per screen.
Then the same for a small sweep of a stdlib-only script that prints as training scripts do.
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
        await pilot.press("3", "q")
        await pilot.pause(1)
        app.save_screenshot("quit-while-running.svg", path=str(OUT))
        await pilot.press("escape", "question_mark")
        await pilot.pause(1)
        app.save_screenshot("help.svg", path=str(OUT))
        await pilot.press("escape")  # the help closed: the analysis, its plots, then trial actions
        await pilot.press("6")
        for _ in range(60):  # the analysis loads in a thread, slower while the sweep trains beside it
            await pilot.pause(0.5)
            tables = app.screen.query("#analysis-table")  # the screen itself may not be up yet
            if tables and tables.first().row_count:
                break
        await pilot.pause(1)
        app.save_screenshot("6-analysis.svg", path=str(OUT))
        for plot in ("slice", "contour", "parallel", "intermediate", "timeline"):  # `]`: the plots in order
            await pilot.press("right_square_bracket")
            await pilot.pause(2)
            if plot != "slice":
                app.save_screenshot(f"6-analysis-{plot}.svg", path=str(OUT))
        await pilot.press("3")
        await pilot.pause(2)
        await pilot.press("a")  # the enqueue form, prefilled from the selected trial
        await pilot.pause(1)
        app.save_screenshot("3-enqueue.svg", path=str(OUT))
        await pilot.press("escape", "v", "down", "down", "v")  # compare the first trial and the third
        await pilot.pause(2)
        app.save_screenshot("3-compare.svg", path=str(OUT))
        await pilot.press("escape")
    small = make_app(workdir=workdir, study="quick")
    async with small.run_test(size=(80, 24)) as pilot:
        await pilot.pause(3)
        small.save_screenshot("3-dashboard-80x24.svg", path=str(OUT))
        for key, name in (("1", "1-system"), ("5", "5-studies"), ("6", "6-analysis")):
            await pilot.press(key)
            await pilot.pause(4)
            small.save_screenshot(f"{name}-80x24.svg", path=str(OUT))


# A program as sweeps of objective.command run: it prints progress as text, its metrics as JSON
# lines, a warning on stderr, and takes its parameters as --name=value flags.
PROGRAM = """\
import argparse, json, math, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--dropout", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=16)
args = parser.parse_args()
print(f"loading data: 12000 train / 3000 val samples", flush=True)
print(f"model: mlp(256, 128), lr={args.lr:.4g}, dropout={args.dropout:.2f}", flush=True)
if args.lr > 0.05:
    print("warning: a high learning rate, the loss may diverge", file=sys.stderr, flush=True)
for epoch in range(args.epochs):
    rate = (0.12 + 3 * args.lr) * (1 - args.dropout / 2)
    score = 0.97 * (1 - math.exp(-(epoch + 1) * rate))
    loss = 1.05 - score + 0.02 * math.sin(epoch)
    for batch in (25, 50, 75, 100):
        print(f"epoch {epoch + 1}/{args.epochs}  [{batch:3d}%]  loss {loss + (100 - batch) / 400:.4f}", flush=True)
        time.sleep(0.25)
    print(json.dumps({"epoch": epoch, "score": round(score, 4), "loss": round(loss, 4),
                      "samples_per_s": round(2400 + 30 * math.cos(epoch), 1)}), flush=True)
print(f"done: best score {score:.4f}", flush=True)
"""
SWEEP = """\
name: program
objective: {command: [python3, train.py], metric: score, direction: maximize}
train: {epochs: 16}
search_space:
  lr: {low: 0.001, high: 0.1, log: true}
  dropout: {low: 0.0, high: 0.5}
budget: {n_trials: 8}
sampler: {name: random, seed: 3}
resources: {parallel: 2}
"""


async def shoot_program(workdir: Path) -> None:
    """A running program trial's detail (its log followed) at both sizes, and the dashboard's output
    panel at 80x24."""
    from tui_hpo.app import make_app
    from tui_hpo.screens.trial import TrialScreen
    from tui_hpo.widgets.trial_table import TrialTable

    for size, suffix in (((120, 40), ""), ((80, 24), "-80x24")):
        app = make_app(workdir=workdir, study="program")
        async with app.run_test(size=size) as pilot:
            await pilot.pause(2)
            table = app.screen.query_one(TrialTable)
            running = sorted((row.start or 0, n) for n, row in app.screen.feed.rows.items() if row.state == "RUNNING")
            app.push_screen(TrialScreen(app.screen.study, running[-1][1]))  # the newest: it runs a while yet
            await pilot.pause(2)
            app.save_screenshot(f"4-trial-log{suffix}.svg", path=str(OUT))
            if suffix:
                await pilot.press("escape")
                table.move_cursor(row=table.get_row_index(str(running[-1][1])))
                await pilot.press("o")
                await pilot.pause(2)
                app.save_screenshot(f"3-dashboard-output{suffix}.svg", path=str(OUT))


def program_sweep(workdir: Path, folder: Path) -> None:
    """Run the program's sweep until a trial has finished and another is half way, then shoot."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(PROGRAM)
    (folder / "sweep.yaml").write_text(SWEEP)
    engine = subprocess.Popen([sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(folder / "sweep.yaml"),
                               "--workdir", str(workdir), "--no-tui"], stdout=subprocess.DEVNULL, cwd=folder)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            c = counts(workdir / "hpo.db")
            if c.get("COMPLETE", 0) >= 2 and c.get("RUNNING", 0):
                break
            time.sleep(0.5)
        time.sleep(2)  # the running trials some epochs in
        asyncio.run(shoot_program(workdir))
    finally:
        engine.terminate()
        engine.wait(timeout=60)


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
        program_sweep(Path(tmp) / "program-runs", Path(tmp) / "program")
    print("\n".join(sorted(p.name for p in OUT.glob("*.svg"))))


if __name__ == "__main__":
    main()
