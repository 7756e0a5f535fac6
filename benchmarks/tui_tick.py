"""The dashboard on a large study: how fast it opens, how much a tick costs, how much memory it holds.

Builds an N-trial study straight in a database (tests/studies.py, in another process), opens the
real app at 120x40 on its dashboard and measures:

- first_load_ms: from creating the app until the table shows its first screenful (the newest
  page is read first; older trials follow a page a poll, the table counting them in);
  goal < 1000 ms at 100,000 trials.
- full_load_ms: until every trial is in the table (sorting and filtering cover them all).
- tick_ms: the steady tick (poll + draw) afterwards while two trials run (their clocks tick, as
  the issue's 372 ms at 100,000 trials was measured); goal < 20 ms at 100,000 trials.
- change_tick_ms: the same with one of them reporting an epoch before each tick (as a worker does
  at an epoch's end), so every tick reads a changed trial, re-sorts the table and redraws the
  learning curves.
- peak memory of the TUI process; goal < 300 MB at 100,000 trials.

`--trials 10000` (the default) and `--trials 100000` are the two recorded sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_hpo.app import make_app  # noqa: E402
from tui_hpo.screens.dashboard import DashboardScreen  # noqa: E402
from tui_hpo.widgets.trial_table import TrialTable  # noqa: E402


def report_epoch(db: Path, step: int) -> None:
    """What a worker writes at the end of an epoch of the newest running trial."""
    with sqlite3.connect(db) as conn:
        trial = conn.execute("SELECT MAX(trial_id) FROM trials").fetchone()[0]
        conn.execute("INSERT INTO hpo_epoch (trial_id, fold, epoch, study_id, ts) VALUES (?, 0, ?, 1, 0)",
                     (trial, 100 + step))
        conn.execute("INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
                     "intermediate_value_type) VALUES (?, ?, 0.5, 'FINITE')", (trial, 100 + step))


async def measure(workdir: Path, n_trials: int, ticks: int) -> tuple[float, float, list[float], list[float]]:
    started = time.perf_counter()
    app = make_app(workdir=workdir)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        table = screen.query_one(TrialTable)
        while table.row_count == 0:
            await pilot.pause(0.01)
        first = (time.perf_counter() - started) * 1000
        while table.row_count < n_trials:
            await pilot.pause(0.01)
        full = (time.perf_counter() - started) * 1000
        before = screen.tick_ms
        while screen.tick_ms == before:  # the tick that read the last page is part of the load, not a tick
            await pilot.pause(0.05)
        idle, changed = [], []
        for step in range(2 * ticks):
            if step >= ticks:
                report_epoch(workdir / "hpo.db", step)
            before = screen.tick_ms
            while screen.tick_ms == before:
                await pilot.pause(0.05)
            (idle if step < ticks else changed).append(screen.tick_ms)
        return first, full, idle, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        built = time.perf_counter()
        # Built in another process, so the memory figure below is the TUI's alone.
        subprocess.run([sys.executable, "-c", f"from pathlib import Path; from tests.studies import make_study; "
                        f"make_study(Path({tmp!r}), n_trials={args.trials - 2}, running=2)"],
                       check=True, capture_output=True, cwd=ROOT)
        print(f"built a {args.trials}-trial study in {time.perf_counter() - built:.1f}s")
        first, full, ticks, changed = asyncio.run(measure(Path(tmp), args.trials, args.ticks))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"first screenful of {args.trials} trials: {first:.0f} ms; all of them in the table: {full:.0f} ms")
    print(f"steady tick (poll + draw), {len(ticks)} ticks: median {statistics.median(ticks):.1f} ms, "
          f"max {max(ticks):.1f} ms; with an epoch reported before each: median "
          f"{statistics.median(changed):.1f} ms, max {max(changed):.1f} ms")
    print(f"peak memory of the TUI process: {rss:.0f} MB")
    print(f"first_load_ms={first:.0f} full_load_ms={full:.0f} tick_ms={statistics.median(ticks):.1f} "
          f"change_tick_ms={statistics.median(changed):.1f} memory_mb={rss:.0f}")


if __name__ == "__main__":
    main()
