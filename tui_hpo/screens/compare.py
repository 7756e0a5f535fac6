"""Two trials side by side (`v` on the dashboard marks one, `v` on another opens this): their
outcome and params, the params that differ marked, and their learning curves on one chart."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Static

from tui_hpo.db import StudyRow, TrialRow
from tui_hpo.format import duration, number
from tui_hpo.screens.base import WorkerScreen
from tui_hpo.widgets.chart import Chart

COLORS = ("cyan", "magenta")  # trial a, trial b: the table's columns and the chart's lines
DIFFERS = "bold yellow"


def diff_table(a: TrialRow, b: TrialRow, metrics: tuple[str, ...], maximize: tuple[bool, ...]) -> Table:
    """Outcome rows (state, each objective with the better value marked, time, epochs), then every
    param either trial has: a `≠` and bold where the two differ, dim where they agree."""
    table = Table(box=None, header_style="bold", expand=False, padding=(0, 1))
    table.add_column("", width=1)
    table.add_column("")
    table.add_column(f"#{a.number}", style=COLORS[0], justify="right", no_wrap=True)
    table.add_column(f"#{b.number}", style=COLORS[1], justify="right", no_wrap=True)
    table.add_row("", Text("state", style="dim"), a.state.lower(), b.state.lower())
    for i, metric in enumerate(metrics):
        va = a.values[i] if a.values and i < len(a.values) else None
        vb = b.values[i] if b.values and i < len(b.values) else None
        better = None if va is None or vb is None or va == vb else ((va > vb) == maximize[i])
        table.add_row("", Text(metric, style="dim"), _value(va, better is True), _value(vb, better is False))
    table.add_row("", Text("time", style="dim"), duration(a.duration()), duration(b.duration()))
    table.add_row("", Text("epochs", style="dim"), str(a.epoch), str(b.epoch))
    table.add_section()
    for key in {**a.params, **b.params}:
        va, vb = a.params.get(key), b.params.get(key)
        same = key in a.params and key in b.params and va == vb
        style = "dim" if same else DIFFERS
        table.add_row(Text("" if same else "≠", style=DIFFERS), Text(key, style="" if same else "bold"),
                      Text(number(va) if key in a.params else "-", style=style),
                      Text(number(vb) if key in b.params else "-", style=style))
    return table


def _value(value: float | None, best: bool) -> Text:
    return Text("-" if value is None else number(value), style="bold green" if best else "")


class CompareScreen(WorkerScreen):
    CSS_PATH = "compare.tcss"
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "back")]

    class Loaded(Message, bubble=False):
        def __init__(self, curves: dict[int, list[tuple[int, float]]], program: bool) -> None:
            super().__init__()
            self.curves, self.program = curves, program

    def __init__(self, study: StudyRow, a: TrialRow, b: TrialRow) -> None:
        super().__init__()
        self.study, self.a, self.b = study, a, b

    def compose(self) -> ComposeResult:
        yield Static(id="compare-header", classes="bar")
        with Horizontal(id="compare-main"):
            yield Static(id="compare-params", classes="panel")
            yield Chart("learning curves", id="compare-curves", classes="framed")
        yield Footer()

    def on_mount(self) -> None:
        a, b, study = self.a, self.b, self.study
        header = Text()
        header.append(f" trial {a.number} ", style=f"bold reverse {COLORS[0]}")
        header.append(" vs ")
        header.append(f" trial {b.number} ", style=f"bold reverse {COLORS[1]}")
        changed = sum(1 for k in {**a.params, **b.params} if a.params.get(k, ...) != b.params.get(k, ...))
        header.append(f"  {changed} param(s) differ  ", style=DIFFERS if changed else "dim")
        header.append(f"study {study.name}", style="dim")
        self.query_one("#compare-header", Static).update(header)
        metrics = study.metrics if study.directions else ("value",)
        maximize = tuple(d == "maximize" for d in study.directions) or (True,)
        box = self.query_one("#compare-params", Static)
        box.border_title = "outcome and params"
        box.update(diff_table(a, b, metrics, maximize))
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare-load")
    def load(self) -> None:
        reader = self.app.reader
        config = reader.sweep_config(self.study.study_id)
        program = bool((config.get("objective") or {}).get("command"))
        self.post_message(self.Loaded(reader.intermediate([self.a.trial_id, self.b.trial_id]), program))

    @on(Loaded)
    def show(self, message: Loaded) -> None:
        chart = self.query_one("#compare-curves", Chart)
        series = [(row, message.curves.get(row.trial_id) or [], color)
                  for row, color in zip((self.a, self.b), COLORS, strict=True)]
        objective = self.study.metrics[0] if self.study.metrics else "value"
        first, xlabel = (0, "step") if message.program else (1, "epoch")
        chart.border_title = f"{objective} by {xlabel}"
        if not any(points for _, points, _ in series):
            chart.border_subtitle = "neither trial reported a value per step"
            chart.plot(None, None)
            return

        def draw(plt: Any) -> None:
            for row, points, color in series:
                if points:
                    plt.plot([p[0] + first for p in points], [p[1] for p in points], label=f"#{row.number}",
                             color=color, marker="braille")
            plt.xlabel(xlabel)

        chart.plot(draw, tuple((row.number, len(points)) for row, points, _ in series))
