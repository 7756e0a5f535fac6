"""How fast things start, and one quick sweep end to end, each beside its baseline.

- The app's import (`import tui_hpo.app`, no torch) against a bare interpreter and `import torch`.
- `tui-hpo --help` against a bare interpreter.
- `tui-hpo run --preset quick --n-trials 8 --no-tui` on the embedded digits: wall time and the
  best validation macro-F1 (goal: under 3 minutes, F1 >= 0.95).
Medians of --repeats fresh processes. Prints `e2e_seconds=<x>` last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT


def seconds(*command: str, repeats: int) -> float:
    """Median wall time of `command` in fresh processes."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-sweep", action="store_true", help="skip the end-to-end sweep")
    args = parser.parse_args()
    py = sys.executable
    bare = seconds(py, "-c", "pass", repeats=args.repeats)
    app = seconds(py, "-c", "import tui_hpo.app", repeats=args.repeats)
    torch = seconds(py, "-c", "import torch", repeats=args.repeats)
    helped = seconds(py, "-m", "tui_hpo.cli", "--help", repeats=args.repeats)
    print(f"bare interpreter      {bare:6.2f} s")
    print(f"import tui_hpo.app    {app:6.2f} s  ({app - bare:.2f} s over bare; import torch alone: {torch:.2f} s)")
    print(f"tui-hpo --help        {helped:6.2f} s  ({helped - bare:.2f} s over bare)")
    if args.no_sweep:
        return
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([py, "-m", "tui_hpo.cli", "run", "--preset", "quick", "--n-trials", "8", "--no-tui",
                        "--workdir", tmp], cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
        report = json.loads((Path(tmp) / "quick" / "report.json").read_text())
    best = report["best"]["value"]
    print(f"quick preset, 8 trials, headless: {wall:.1f} s wall, best val_f1 {best:.3f} "
          "(goal: under 180 s, F1 >= 0.95)")
    print(f"e2e_seconds={wall:.1f}")


if __name__ == "__main__":
    main()
