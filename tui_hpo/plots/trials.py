"""Plots of trials over their own time: the intermediate values each reported (pruning points
marked), and the timeline of trials per worker, where an idle worker shows as a gap."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.text import Text

from tui_hpo.format import duration
from tui_hpo.plots.figure import STATE_COLOR, STATE_MARKER, STATE_STYLE, Drawn, View, empty, plotext, spread
from tui_hpo.plots.snapshot import Snapshot, Trial

MAX_CURVES = 120  # one plotext series per trial: more take seconds to draw
TIMELINE_SYMBOL = {"COMPLETE": "█", "PRUNED": "▒", "FAIL": "╳", "RUNNING": "▓", "WAITING": "░"}
NO_WORKER = "(no worker)"


def pruning_points(trials: Sequence[Trial]) -> list[tuple[int, float]]:
    """(step, value) where each pruned trial stopped: its last intermediate value."""
    return [t.intermediate[-1] for t in trials if t.state == "PRUNED" and t.intermediate]


def draw_intermediate(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    caption = "what each trial reported per step (epoch); the pruner judges these"
    reported = [t for t in snap.trials if t.intermediate]
    if not reported:
        return empty(caption, "intermediate values appear once a trial reports one (each epoch of a tui-hpo "
                              "trial): a curve per trial, where pruned trials stopped marked")
    # every pruned trial's stop is marked, the curves are a spread sample (the latest included)
    shown = spread(reported, MAX_CURVES)
    stops = pruning_points(reported)
    counts = Counter(t.state for t in shown)

    def figure(plt: Any) -> None:
        labelled: set[str] = set()
        for trial in shown:
            label = None if trial.state in labelled else f"{trial.state.lower()} ({counts[trial.state]})"
            labelled.add(trial.state)
            steps = [s for s, _ in trial.intermediate]
            values = [v for _, v in trial.intermediate]
            if len(steps) == 1:
                plt.scatter(steps, values, marker=STATE_MARKER.get(trial.state, "•"),
                            color=STATE_COLOR.get(trial.state, "white"), label=label)
            else:
                plt.plot(steps, values, marker="braille", color=STATE_COLOR.get(trial.state, "white"), label=label)
        if stops:
            plt.scatter([s for s, _ in stops], [v for _, v in stops], marker="✕", color="red+",
                        label=f"pruned here ({len(stops)})")
        plt.xlabel("step")

    said = f"; {len(shown)} of {len(reported)} curves" if len(shown) < len(reported) else ""
    return Drawn(caption + said, plotext(figure, width, height, view))


def timeline(trials: Sequence[Trial], start: float, end: float, columns: int) -> dict[str, list[Trial | None]]:
    """Per worker, the trial it ran in each of `columns` equal slices of [`start`, `end`] (None:
    idle). A slice shared by trials shows the one that ran longest in it; a trial shorter than a
    slice still takes the slice it started in, so no trial disappears while its worker is idle."""
    slot = max(end - start, 1e-9) / columns
    busy: dict[str, list[dict[int, float]]] = {}
    for trial in trials:
        if trial.start is None:
            continue
        cells = busy.setdefault(trial.worker or NO_WORKER, [{} for _ in range(columns)])
        stop = trial.complete if trial.complete is not None else end
        first = max(0, min(columns - 1, int((trial.start - start) / slot)))
        last = max(first, min(columns - 1, int((stop - start) / slot - 1e-9)))
        for c in range(first, last + 1):
            lo, hi = start + c * slot, start + (c + 1) * slot
            overlap = max(0.0, min(hi, stop) - max(lo, trial.start)) or 1e-12
            cells[c][trial.number] = cells[c].get(trial.number, 0.0) + overlap
    by_number = {t.number: t for t in trials}
    return {worker: [by_number[max(c, key=c.__getitem__)] if c else None for c in cells]
            for worker, cells in sorted(busy.items())}


def draw_timeline(snap: Snapshot, view: View, width: int, height: int) -> Drawn:
    caption = "trials per worker over time; gaps are idle workers"
    timed = [t for t in snap.trials if t.start is not None]
    if not timed:
        return empty(caption, "the timeline appears once a trial has started: a row per worker (the worker user "
                              "attribute), each trial a bar in its state's colour, idle time as gaps")
    start = min(t.start for t in timed)  # type: ignore[type-var]
    # the last thing the database knows happened: a running trial's bar ends there (a trial left
    # RUNNING by a killed worker would otherwise stretch the axis to today)
    end = max(t.complete or t.start for t in timed)  # type: ignore[type-var]
    running = any(t.complete is None for t in timed)
    workers = sorted({t.worker or NO_WORKER for t in timed})
    label_w = min(18, max(len(w) for w in workers))
    columns = max(4, width - label_w - 7)
    rows = timeline(timed, start, end, columns)
    room = max(1, height - 3)
    shown = workers[:room]
    row_h = max(1, min(3, room // len(shown)))
    lines = []
    for worker in shown:
        cells = rows[worker]
        idle = sum(c is None for c in cells) / len(cells)
        for sub in range(row_h):
            middle = sub == row_h // 2
            line = Text(f"{worker[-label_w:] if middle else '':>{label_w}} ", no_wrap=True)
            line.append_text(_bars(cells, view, numbered=middle))
            if middle:
                line.append(f" {1 - idle:4.0%}", style="bold red" if idle > 0.5 else "dim")
            lines.append(line)
    if len(workers) > room:
        lines.append(Text(f"{len(workers) - room} more worker(s) below this height", style="dim"))
    total = duration(end - start) + (" (last start or end)" if running else "")
    axis = Text(f"{'':>{label_w}} 0:00" + " " * max(1, columns - 4 - len(total)) + total + "  busy",
                style="dim", no_wrap=True)
    lines.append(axis)
    legend = Text(" " * label_w + " ", no_wrap=True, overflow="ellipsis")
    for state, symbol in TIMELINE_SYMBOL.items():
        legend.append(symbol, style=STATE_STYLE[state] if view.color else "")
        legend.append(f" {state.lower()}  ", style="dim")
    legend.append("· idle   numbers: trials", style="dim")
    lines.append(legend)
    return Drawn(caption, Group(*lines))


def _bars(cells: Sequence[Trial | None], view: View, numbered: bool) -> Text:
    """One worker's row: each trial a run of its state's symbol, its number written at the start
    of the run when the run is long enough to hold it."""
    text = Text(no_wrap=True)
    i = 0
    while i < len(cells):
        trial = cells[i]
        run = 1
        while i + run < len(cells) and cells[i + run] is trial:
            run += 1
        if trial is None:
            text.append("·" * run, style="dim")
        else:
            style = STATE_STYLE.get(trial.state, "") if view.color else ""
            label = str(trial.number) if numbered and run > len(str(trial.number)) else ""
            text.append(label, style=f"reverse {style}".strip())
            text.append(TIMELINE_SYMBOL.get(trial.state, "?") * (run - len(label)), style=style)
        i += run
    return text
