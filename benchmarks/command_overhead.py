"""Engine overhead on a program's trials: a script reporting 5 epochs of 0.2 s each, run directly
and as a command sweep (`objective.command`), side by side.

The script prints one JSON line per epoch (`{"epoch": 1, "val_accuracy": ...}`) after sleeping
0.2 s, so its own work is fixed and tiny, and writes its own first and last moments to stderr.
Direct: N runs one after another, each a subprocess with its output piped, as the engine runs
it. Sweep: N trials through the real CLI, one worker, SQLite, the median pruner asked at every
report but never pruning (`n_startup_trials: 1000`), so each epoch costs what a report costs (a
metrics row, `trial.report`, `should_prune`) and every trial runs to its end. The sweep's side
is the span from the first trial's start to the last trial's end as Optuna records them
(`datetime_start`, `datetime_complete`). Printed apart: the engine's one-off start-up (command to
first trial) and wind-down (last trial to exit), and where a trial's extra time lies: before the
program's first line (ask, user attributes, parameter files, the spawn), after its last line
(the last report, tell), between trials (the budget claim and the loop's checks). Prints
`ratio=<direct total / sweep span>` last (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from _common import ROOT

from engine.storage import default_url

EPOCHS, EPOCH_S = 5, 0.2
PROGRAM = textwrap.dedent(f"""
    import time
    began = time.time()
    import argparse, json, sys
    p = argparse.ArgumentParser()
    p.add_argument("--x", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default={EPOCHS})
    a = p.parse_args()
    for epoch in range(1, a.epochs + 1):
        time.sleep({EPOCH_S})
        print(json.dumps({{"epoch": epoch, "val_accuracy": 1 - abs(a.x - 0.5) / epoch}}), flush=True)
    print(f"span {{began!r}} {{time.time()!r}}", file=sys.stderr)  # the program's own first and last moments
""")
SWEEP = """\
objective: {{command: ["{{interpreter}}", program.py], metric: val_accuracy, direction: maximize}}
train: {{epochs: {epochs}}}
search_space: {{x: {{low: 0.0, high: 1.0}}}}
sampler: {{name: random, seed: 0}}
pruner: {{name: median, options: {{n_startup_trials: 1000}}}}
resources: {{parallel: 1}}
budget: {{n_trials: {n}}}
"""


def program_span(output: str) -> tuple[float, float]:
    """The program's own first and last moments (epoch seconds), from the line it writes last."""
    line = next(x for x in reversed(output.splitlines()) if x.startswith("span "))
    began, ended = line.split()[1:]
    return float(began), float(ended)


def direct(folder: Path, n: int) -> list[tuple[float, float, float]]:
    """(start, the program's own span, end) of each of `n` runs of the program, one after another,
    stdout and stderr piped, as epoch seconds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = []
    for i in range(n):
        started = time.time()
        out = subprocess.run([sys.executable, "program.py", f"--x={i / n}", f"--epochs={EPOCHS}"], cwd=folder,
                             env=env, check=True, capture_output=True, text=True)
        ended = time.time()
        runs.append((started, *program_span(out.stderr), ended))
    return runs


@dataclass
class Sweep:
    trials: list[tuple[float, float, float, float]]  # start, the program's own first and last moments, end
    started: float  # the command's start and exit
    ended: float
    spawned: float  # the engine's log line for the worker's spawn
    registered: float  # the worker's registration (after its imports)


def sweep(folder: Path, n: int) -> Sweep:
    """The sweep's trials as Optuna and the program record them, and the command's milestones,
    as epoch seconds."""
    config = folder / "command_overhead.yaml"
    config.write_text(SWEEP.format(epochs=EPOCHS, n=n))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUI_HPO__")} | {"COLUMNS": "120"}
    workdir = folder / f"runs-{time.time_ns()}"
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "run", "--config", str(config), "--workdir",
                             str(workdir), "--no-tui"], capture_output=True, text=True, env=env, cwd=ROOT)
    ended = time.time()
    if result.returncode != 0:
        raise SystemExit(f"sweep failed:\n{result.stderr}\n{result.stdout}")
    study = optuna.load_study(study_name=config.stem, storage=default_url(workdir))
    trials = sorted(study.trials, key=lambda t: t.number)
    states = {t.state for t in trials}
    if len(trials) != n or states != {optuna.trial.TrialState.COMPLETE}:
        raise SystemExit(f"expected {n} complete trials, got {len(trials)}: {states}")
    folder = workdir / config.stem
    # Optuna's datetimes come back naive, in local time: .timestamp() reads them so
    out = [(t.datetime_start.timestamp(),
            *program_span((folder / "trials" / str(t.number) / "output.log").read_text()),
            t.datetime_complete.timestamp()) for t in trials]
    line = next(x for x in (folder / "engine.log").read_text().splitlines() if "engine INFO worker 0: pid" in x)
    spawned = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    with sqlite3.connect(workdir / "hpo.db") as conn:
        registered = conn.execute("SELECT MIN(ts) FROM hpo_event WHERE message LIKE 'worker % started%'").fetchone()[0]
    return Sweep(out, started, ended, spawned, registered)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="direct and sweep, alternating")
    args = parser.parse_args()
    n = args.n_trials
    rounds: list[tuple[list[tuple[float, float, float]], Sweep]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "program.py").write_text(PROGRAM)
        for _ in range(args.rounds):
            rounds.append((direct(folder, n), sweep(folder, n)))
    runs = [r for direct_runs, _ in rounds for r in direct_runs]
    trials = [t for _, sw in rounds for t in sw.trials]
    totals = [sum(e - s for s, _, _, e in direct_runs) for direct_runs, _ in rounds]
    spans = [sw.trials[-1][3] - sw.trials[0][0] for _, sw in rounds]
    ratios = [total / span for total, span in zip(totals, spans, strict=True)]
    total, span = statistics.median(totals), statistics.median(spans)
    print(f"program: {EPOCHS} epochs x {EPOCH_S} s, a JSON line each; {n} runs each side, {args.rounds} round(s), "
          "medians")
    print(f"direct, one subprocess after another: {total:.2f} s; a run {ms([e - s for s, _, _, e in runs])}, "
          f"of which the program's own {ms([b - a for _, a, b, _ in runs])}")
    print(f"sweep, first trial's start to last trial's end: {span:.2f} s, "
          f"{(span - total) / n * 1000:+.0f} ms a trial against direct")
    print(f"  a trial, ask to tell: {ms([e - s for s, _, _, e in trials])}, of which the program's own "
          f"{ms([b - a for _, a, b, _ in trials])}")
    print(f"  before the program's first line: {ms([a - s for s, a, _, _ in trials])} "
          f"(direct: {ms([a - s for s, a, _, _ in runs])})")
    print(f"  after its last line, to tell: {ms([e - b for _, _, b, e in trials])} "
          f"(direct, to the run's end: {ms([e - b for _, _, b, e in runs])})")
    between = [b[0] - a[3] for _, sw in rounds for a, b in itertools.pairwise(sw.trials)]
    print(f"  between trials (tell to the next ask): {ms(between)}")
    sweeps = [sw for _, sw in rounds]

    def sec(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s"

    print(f"engine one-off: start-up {sec([sw.trials[0][0] - sw.started for sw in sweeps])} (command to first trial: "
          f"{sec([sw.spawned - sw.started for sw in sweeps])} to the worker's spawn, "
          f"{sec([sw.registered - sw.spawned for sw in sweeps])} to its registration, "
          f"{sec([sw.trials[0][0] - sw.registered for sw in sweeps])} to its first trial); wind-down "
          f"{sec([sw.ended - sw.trials[-1][3] for sw in sweeps])} (last trial to exit); whole command "
          f"{sec([sw.ended - sw.started for sw in sweeps])}")
    print("ratio per round: " + ", ".join(f"{r:.3f}" for r in ratios))
    print(f"ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
