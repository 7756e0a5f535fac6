"""Headless output for nohup/SLURM logs and plain terminals.

On a terminal: a progress bar (finished/total, running, pruned, failed, best so far, ETA) with
each finished trial printed above it. Not on a terminal: one line per event, never a redraw.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tui_hpo.format import duration

LEVEL_STYLE = {"warning": "yellow", "error": "bold red"}
KIND_STYLE = {"trial_complete": "green", "trial_pruned": "cyan", "trial_failed": "red"}


class HeadlessReporter:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.live = self.console.is_terminal
        self.last_status: Any = None
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> HeadlessReporter:
        if self.live:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                console=self.console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=None, detail="starting workers", eta="-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def event(self, row: dict[str, Any]) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(row["ts"]))
        style = LEVEL_STYLE.get(row["level"]) or KIND_STYLE.get(row["kind"])
        text = row["message"]
        if not self.live and row["kind"].startswith("trial_") and self.last_status is not None:
            text += f" | {self._summary(self.last_status)}"
        if row["kind"] == "trial" and not self.live:
            return  # starts are noise in a log; finishes carry the news
        line = f"[dim]{stamp}[/dim] " + (f"[{style}]{_escape(text)}[/{style}]" if style else _escape(text))
        self.console.print(line, soft_wrap=not self.live)

    def progress(self, status: Any) -> None:
        self.last_status = status
        if self.bar is None:
            return
        self.bar.update(self.task, description=status.study_name, total=status.n_trials,
                             completed=min(status.done, status.n_trials), detail=self._summary(status),
                             eta=duration(status.eta_seconds()))

    def _summary(self, status: Any) -> str:
        c = status.counts
        best = f"{status.best[0]:.4f}" if status.best else "-"
        done = "" if self.live else f"{status.done}/{status.n_trials} done, "  # the bar shows it
        return (f"{done}{c.get('RUNNING', 0)} running, {c.get('PRUNED', 0)} pruned, "
                f"{c.get('FAIL', 0)} failed, best {best}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def top_table(rows: list[dict[str, Any]], metrics: list[str], title: str) -> Table:
    """The top trials as a rich table: number, value(s), params, epochs, duration."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("params", overflow="fold")
    table.add_column("epochs", justify="right")
    table.add_column("time", justify="right")
    for row in rows:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items())
        table.add_row(str(row["number"]), *(f"{v:.4f}" for v in row["values"]), params,
                      str(row["epochs"]), duration(row["seconds"]))
    return table
