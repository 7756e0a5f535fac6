"""One dashboard tick at 10,000 trials: poll the database and redraw, headless.

Builds a 10,000-trial study straight in a database (tests/studies.py), opens the real app at
120x40 on its dashboard, lets the first load finish, then measures ticks while two trials run.
Prints the first load and the steady tick side by side, the process memory, and `tick_ms=<x>`
last (goal < 50 ms; memory goal < 200 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
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


async def measure(workdir: Path, n_trials: int, ticks: int) -> tuple[float, list[float]]:
    app = make_app(workdir=workdir)
    async with app.run_test(size=(120, 40)) as pilot:
        started = time.perf_counter()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        table = screen.query_one(TrialTable)
        while table.row_count < n_trials:
            await pilot.pause(0.05)
        first = (time.perf_counter() - started) * 1000
        before = screen.tick_ms
        while screen.tick_ms == before:  # the tick that loaded everything is the first load, not a tick
            await pilot.pause(0.05)
        samples = []
        for _ in range(ticks):
            before = screen.tick_ms
            while screen.tick_ms == before:
                await pilot.pause(0.05)
            samples.append(screen.tick_ms)
        return first, samples


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
        first, ticks = asyncio.run(measure(Path(tmp), args.trials, args.ticks))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"first load of {args.trials} trials: {first:.0f} ms (once, when the dashboard opens)")
    print(f"steady tick (poll + draw), {len(ticks)} ticks: median {statistics.median(ticks):.1f} ms, "
          f"max {max(ticks):.1f} ms")
    print(f"peak memory of the TUI process: {rss:.0f} MB")
    print(f"tick_ms={statistics.median(ticks):.1f}")


if __name__ == "__main__":
    main()
