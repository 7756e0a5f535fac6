"""One trial: params, per-epoch metrics (table and curves), system samples while it ran, its
events, and why it failed. A trial of a program (objective.command) also has its output.log, shown
in a pane that follows it while the trial runs (`l` switches between it and the details), and
curves of whatever numbers the program reports, its objective first (`m` shows one at a time).

The trial's note (optuna-dashboard's, `n` edits it) heads the details; `a` queues a trial from its
params, `r` fails and retries it while it runs, `y` copies its params (screens/actions.py)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import Worker

from tui_hpo import clock, notes
from tui_hpo.db import Event, Sample, StudyRow, TrialRow
from tui_hpo.format import duration, number
from tui_hpo.screens import actions
from tui_hpo.screens.base import WorkerScreen
from tui_hpo.tables import class_f1_text
from tui_hpo.widgets.chart import Chart
from tui_hpo.widgets.log_pane import LogPane
from tui_hpo.widgets.log_tail import clean, trial_log

# Written by the worker: F1 per class and early stopping when a trial finishes; for a program's
# trial its log file and command line when it starts, its exit code and final metrics when it ends.
DETAIL_ATTRS = ("class_f1", "stopped_early", "log", "command", "exit_code", "metrics", "pbt", "resumed_from_epoch")
METRICS = ("train_loss", "val_loss", "val_accuracy", "val_f1", "lr", "samples_per_s", "peak_mem_mb", "seconds")
CURVES = (("val_f1", "green"), ("val_accuracy", "cyan"), ("val_loss", "red"), ("train_loss", "orange"))
COLORS = ("green", "cyan", "red", "orange", "magenta", "blue", "yellow", "gray")
NOT_METRICS = {"trial_id", "study_id", "fold", "epoch", "ts"}  # a step row's keys that are no measurement
MAX_CURVES = 5  # series on one chart: more is a tangle in 60 columns
MAX_POINTS = 600  # points a series is thinned to
MAX_STEP_ROWS = 200  # a program's steps in the table: the newest
RELOAD_S = 2.0  # a running trial is read again this often


class TrialScreen(WorkerScreen):
    CSS_PATH = "trial.tcss"
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "back"),
                Binding("p", "package", "write its model package"),
                Binding("l", "toggle_log", "log/details"),
                Binding("slash", "search", "search", key_display="/"),
                Binding("n", "jump(True)", "next match", show=False),
                Binding("N,shift+n", "jump(False)", "previous match", show=False),
                Binding("m", "next_metric", "metric"),
                Binding("a", "enqueue", "enqueue a trial", show=False),
                Binding("r", "retry", "fail and retry", show=False),
                Binding("y", "copy", "copy params", show=False),
                # After the log's n/N: those act only while a search is on (as in less), else `n` is the note.
                Binding("n", "note", "trial note", show=False)]

    class Loaded(Message, bubble=False):
        def __init__(self, row: TrialRow | None, epochs: list[dict[str, Any]], events: list[Event],
                     samples: list[Sample], attrs: dict[str, Any], log: Path | None = None,
                     note: notes.Note | None = None) -> None:
            super().__init__()
            self.row, self.epochs, self.events, self.samples = row, epochs, events, samples
            self.note = note or notes.Note(0, "")  # optuna-dashboard's note on the trial
            self.attrs = attrs  # DETAIL_ATTRS the trial has
            self.log_path = log  # a program's output.log (None for the built-in trainer's trials)

    def __init__(self, study: StudyRow, number_: int) -> None:
        super().__init__()
        self.study, self.number = study, number_
        self.row: TrialRow | None = None
        self.log_path: Path | None = None
        self.views: list[tuple[str, ...]] = []  # a program's curves: all its own at once, then each alone
        self.view = 0
        self._epochs_shown: list[dict[str, Any]] = []
        self._reload: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="trial-header", classes="bar")
        with Horizontal(id="trial-top"):
            yield Static(id="trial-params", classes="panel")
            yield Chart("metrics per epoch", id="trial-curves", classes="framed")
        yield LogPane(id="trial-log")
        with VerticalScroll(id="trial-body"):
            yield Static(id="trial-note", classes="panel")
            yield Static(id="trial-epochs", classes="panel")
            yield Static(id="trial-classes", classes="panel")
            yield Static(id="trial-system", classes="panel")
            yield Static(id="trial-events", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#trial-params", Static).border_title = "params"
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="trial-load")
    def load(self) -> None:
        reader = self.app.reader
        row = reader.trial(self.study.study_id, self.number)
        epochs = reader.epochs(row.trial_id) if row else []
        events = reader.events(self.study.study_id, trial_number=self.number, limit=100)
        samples = reader.samples_between(row.start, row.complete or clock.now()) if row and row.start else []
        attrs = reader.trial_attrs(row.trial_id, DETAIL_ATTRS) if row else {}
        log = trial_log(attrs.get("log"), self.app.workdir, self.study.name, self.number)
        note = notes.load(self.app.url, self.study.study_id, row.trial_id) if row else None
        self.post_message(self.Loaded(row, epochs, events, samples, attrs, log, note))

    def _reload_later(self) -> None:
        """A running trial is read again (curves, header, events) until it ends."""
        if self._reload is not None:
            self._reload.stop()
        self._reload = self.set_timer(RELOAD_S, self._reload_now)

    def _reload_now(self) -> None:
        self._reload = None
        if self.is_current:
            self.load()
        else:
            self._reload_later()

    def worker_failed(self, worker: Worker) -> None:
        if worker.group == "trial-load" and (self.row is None or self.row.state == "RUNNING"):
            self._reload_later()

    @on(Loaded)
    def show(self, message: Loaded) -> None:
        row = self.row = message.row
        header = self.query_one("#trial-header", Static)
        if row is None:
            header.update(Text(f"trial {self.number} not found", style="bold red"))
            return
        text = Text()
        text.append(f" trial {row.number} ", style="bold reverse")
        text.append(f" {row.state.lower()} ", style={"COMPLETE": "green", "PRUNED": "cyan", "FAIL": "red",
                                                     "RUNNING": "yellow"}.get(row.state, ""))
        if row.values:
            metrics = self.study.metrics or ("value",)
            text.append("  " + "  ".join(f"{m}={number(v)}" for m, v in zip(metrics, row.values, strict=False)))
        text.append(f"  took {duration(row.duration())}  on {row.worker or '-'} ({row.device or '-'})")
        code = message.attrs.get("exit_code")
        if isinstance(code, int) and code != 0:
            text.append(f"  exit code {code}" if code > 0 else f"  ended by signal {-code}",
                        style="red" if row.state == "FAIL" else "")
        stopped = message.attrs.get("stopped_early")
        if stopped:
            fold = f" of fold {stopped['fold'] + 1}" if stopped["fold"] else ""  # 0 is a single split's too
            text.append(f"\n stopped early after epoch {stopped['after_epoch']}{fold}, valued at its best epoch "
                        f"{stopped['best_epoch']}", style="cyan")
        if row.retry_of is not None:
            text.append(f"\n a rerun of trial {row.retry_of}, whose worker died or was interrupted", style="cyan")
        resumed = message.attrs.get("resumed_from_epoch")
        if isinstance(resumed, int):
            text.append(f"\n went on from its checkpoint after epoch {resumed}", style="cyan")
        for step in message.attrs.get("pbt") or []:  # the Ray tier's population-based training
            changes = ", ".join(f"{key} {number(old)} -> {number(new)}" for key, (old, new) in step["mutated"].items())
            source = f"trial {step['cloned']}" if step.get("cloned") is not None else "another trial"
            text.append(f"\n PBT after epoch {step['epoch']}: {source}'s weights, {changes or 'no change'}",
                        style="magenta")
        if row.fail_reason:
            text.append(f"\n failed: {_reason(row.fail_reason, message.log_path is not None)}", style="bold red")
        header.update(text)
        params = Table.grid(padding=(0, 1))
        params.add_column(style="bold")
        params.add_column()
        for key, value in row.params.items():
            params.add_row(key, number(value))
        final = message.attrs.get("metrics")
        if isinstance(final, dict) and final:  # a program's last reported numbers
            params.add_row(Text("reported", style="dim"), "")
            for key, value in final.items():
                params.add_row(Text(str(key), style="bold cyan"), number(value))
        self.query_one("#trial-params", Static).update(params)
        note = self.query_one("#trial-note", Static)
        note.border_title = "note"
        note.update(actions.note_text(message.note))
        self._show_log(message.log_path, message.attrs.get("command"), row)
        self._epochs(message.epochs, message.log_path is not None)
        self._per_class(message.attrs.get("class_f1"))
        self._system(message.samples)
        events = Text()
        for event in message.events:
            events.append(time.strftime("%H:%M:%S ", time.localtime(event.ts)), style="dim")
            events.append(event.message + "\n", style={"warning": "yellow", "error": "red"}.get(event.level, ""))
        box = self.query_one("#trial-events", Static)
        box.border_title = "events"
        box.update(events if message.events else Text("no events", style="dim"))
        if row.state in ("RUNNING", "WAITING"):
            self._reload_later()

    def _show_log(self, path: Path | None, command: Any, row: TrialRow) -> None:
        """The log pane, for a program's trial: shown (instead of the details) the first time."""
        if path is None:
            return
        pane = self.query_one(LogPane)
        if self.log_path is None:
            self.add_class("-program", "-log")
            self.log_path = path
            argv = " ".join(str(a) for a in command) if isinstance(command, list) else ""
            pane.border_title = Text(f"output: {argv}" if argv else f"output: {path}")
            pane.view.focus()  # the arrows and page keys scroll the log
            self.refresh_bindings()
        pane.open(path, live=row.state in ("RUNNING", "WAITING"))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The log's keys only for a trial with a log; `m` only with more than one set of curves."""
        if action in ("toggle_log", "search"):
            return self.log_path is not None
        if action == "jump":
            return self.log_path is not None and bool(self.query_one(LogPane).view.needle)
        if action == "package":  # a program's model is its own business: tui-hpo cannot train it again
            return self.log_path is None
        if action == "next_metric":
            return len(self.views) > 1
        return True

    def action_toggle_log(self) -> None:
        self.toggle_class("-log")
        (self.query_one(LogPane).view if self.has_class("-log") else self.query_one("#trial-body")).focus()

    def action_search(self) -> None:
        self.add_class("-log")
        self.query_one(LogPane).open_search()

    def action_jump(self, forward: bool) -> None:
        self.add_class("-log")
        self.query_one(LogPane).jump(forward)

    def action_next_metric(self) -> None:
        if self.views:
            self.view = (self.view + 1) % len(self.views)
            self._curves(self._epochs_shown, True)

    def action_enqueue(self) -> None:
        actions.enqueue(self, self.study, self.row)

    def action_retry(self) -> None:
        if self.row is not None:
            actions.retry(self, self.study, self.row)

    def action_copy(self) -> None:
        if self.row is not None:
            actions.copy_params(self, self.row)

    def action_note(self) -> None:
        if self.row is not None:
            actions.edit_note(self, self.study, self.row, saved=self.load)

    def action_package(self) -> None:
        if self.row is None or self.row.state != "COMPLETE":
            self.notify("only a completed trial has a model to package", severity="warning")
            return
        self.package(self.row)

    @work(thread=True, exclusive=True, exit_on_error=False, group="trial-package")
    def package(self, row: TrialRow) -> None:
        """The trial's model package: its kept checkpoint where the sweep kept one, else the trial
        trained again with its own params (`tui-hpo train --out`, a child process: the TUI never
        imports torch) into DIR/<study>/packages/trial_N.safetensors."""
        from engine.artifacts import dump_yaml, write_atomic
        from engine.insights.results import best_config
        from engine.insights.summary import saved_config
        from engine.sweep.checkpoints import path_of

        folder = self.app.workdir / self.study.name
        kept = path_of(folder, row.number)
        if kept.is_file():
            self.app.call_from_thread(self.notify, f"trial {row.number}'s package was kept by the sweep: {kept}\n"
                                                   f"tui-hpo predict --model {kept} --data PATH", timeout=15)
            return
        config = saved_config(self.app.url, self.study.name)
        if config is None:
            self.app.call_from_thread(self.notify, "a plain Optuna study has no config to train", severity="warning")
            return
        out = folder / "packages" / f"trial_{row.number}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        recipe = out.with_suffix(".yaml")
        write_atomic(recipe, dump_yaml(best_config(config, row.params),
                                       f"# trial {row.number} of '{self.study.name}', trained again for its package\n"))
        self.app.call_from_thread(self.notify, f"trial {row.number}'s model was not kept: training it again "
                                               f"with its params for {out.name} ...", timeout=10)
        done = subprocess.run([sys.executable, "-m", "tui_hpo.cli", "train", "--config", str(recipe), "--out",
                               str(out), "--json"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            self.app.call_from_thread(self.notify, f"wrote {out}\ntui-hpo predict --model {out} --data PATH",
                                      timeout=15)
        else:
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            self.app.call_from_thread(self.notify, f"packaging trial {row.number} failed: {reason}",
                                      severity="error", timeout=15)

    def _epochs(self, epochs: list[dict[str, Any]], program: bool = False) -> None:
        """The steps as a table and as curves: the built-in trainer's columns, or for a program's
        trial the numbers it reported (its objective first), by the step it gave them."""
        self._epochs_shown = epochs
        program = program or bool(_reported(epochs, exclude=METRICS))
        box = self.query_one("#trial-epochs", Static)
        if program:
            names = _ordered(_reported(epochs), self.study.metrics)
            box.border_title = "reported per step"
            box.update(_steps_table(epochs, names) if epochs and names else
                       Text("no step reported yet", style="dim"))
        else:
            table = Table(box=None, header_style="bold", expand=False)
            for column in ("fold", "epoch", *METRICS):
                table.add_column(column, justify="right")
            for e in epochs:
                table.add_row(str(e["fold"]), str(e["epoch"] + 1), *(number(e[m]) if e[m] is not None else "-"
                                                                      for m in METRICS))
            box.border_title = "per-epoch metrics"
            box.update(table if epochs else Text("no epoch finished", style="dim"))
        self._curves(epochs, program)

    def _curves(self, epochs: list[dict[str, Any]], program: bool) -> None:
        chart = self.query_one("#trial-curves", Chart)
        if not epochs:
            if program:
                chart.border_title = "reported per step"
            chart.plot(None, None)
            return
        if not program:
            def draw(plt: Any) -> None:
                xs = list(range(1, len(epochs) + 1))
                for metric, color in CURVES:
                    plt.plot(xs, [e[metric] for e in epochs], label=metric, color=color, marker="braille")
                plt.xlabel("epoch (all folds)")

            chart.plot(draw, len(epochs))
            return
        views = _views(epochs, self.study.metrics)
        if views != self.views:  # a running trial reported more: the curves shown stay shown
            shown = self.views[self.view] if self.views else None
            self.views, self.view = views, views.index(shown) if shown in views else 0
            self.refresh_bindings()
        if not views:
            chart.plot(None, None)
            return
        shown = views[self.view]
        objectives = set(self.study.metrics)
        chart.border_title = Text(", ".join(f"{n} (objective)" if n in objectives else n for n in shown))
        chart.border_subtitle = Text(f"m: next {self.view + 1}/{len(views)}") if len(views) > 1 else None
        step = max(1, math.ceil(len(epochs) / MAX_POINTS))
        rows = epochs[::step] if epochs[-1] is epochs[::step][-1] else [*epochs[::step], epochs[-1]]
        series = [(name, [(float(e["epoch"]), float(e[name])) for e in rows if _is_number(e.get(name))])
                  for name in shown]

        def draw_program(plt: Any) -> None:
            for (name, points), color in zip(series, COLORS, strict=False):
                if points:
                    plt.plot([p[0] for p in points], [p[1] for p in points], label=name, color=color,
                             marker="braille")
            plt.xlabel("step")

        chart.plot(draw_program, (shown, len(epochs), tuple(epochs[-1].get(n) for n in shown)))

    def _per_class(self, scores: dict[str, float | None] | None) -> None:
        """Validation F1 per class, worst first: the class a good macro-F1 hides stands out."""
        box = self.query_one("#trial-classes", Static)
        box.display = bool(scores)
        if scores:
            box.border_title = "validation F1 per class, worst first"
            box.update(class_f1_text(scores, limit=len(scores)))

    def _system(self, samples: list[Sample]) -> None:
        box = self.query_one("#trial-system", Static)
        box.border_title = "system while it ran"
        if not samples:
            box.update(Text("no samples", style="dim"))
            return
        cpu = [s.cpu_percent for s in samples]
        ram = [s.ram_percent for s in samples]
        text = Text()
        text.append(f"{len(samples)} samples  CPU mean {sum(cpu) / len(cpu):.0f}% max {max(cpu):.0f}%  "
                    f"RAM max {max(ram):.0f}%")
        gpus = [g for s in samples for g in s.gpus]
        if gpus:
            utils = [g.get("util_percent") or 0 for g in gpus]
            mems = [g.get("mem_used_mb") or 0 for g in gpus]
            text.append(f"  GPU util mean {sum(utils) / len(utils):.0f}%  memory max {max(mems) / 1024:.1f} GiB")
        box.update(text)


def _reason(reason: str, program: bool) -> str:
    """Why a trial failed, safe to print. A program's reason quotes its last stderr lines: the header
    has room for the first line and the last one (the error, mostly); the log pane has the rest."""
    lines = [clean(line.encode(), limit=400 if program else len(line)) for line in reason.splitlines()] or [""]
    if program and len(lines) > 2:
        return f"{lines[0]}\n   {lines[-1]}"
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reported(epochs: list[dict[str, Any]], exclude: tuple[str, ...] = ()) -> list[str]:
    """The names with a number in some step, in the order they first appear."""
    names: dict[str, None] = {}
    for e in epochs:
        for name, value in e.items():
            if name not in NOT_METRICS and name not in exclude and name not in names and _is_number(value):
                names[name] = None
    return list(names)


def _ordered(names: list[str], objectives: tuple[str, ...]) -> list[str]:
    """The objective's metrics first, in their order, then the rest as reported."""
    return [m for m in objectives if m in names] + [n for n in names if n not in objectives]


def _magnitude(epochs: list[dict[str, Any]], name: str) -> float:
    return max((abs(float(e[name])) for e in epochs if _is_number(e.get(name))), default=0.0)


def _views(epochs: list[dict[str, Any]], objectives: tuple[str, ...]) -> list[tuple[str, ...]]:
    """What `m` steps through: first the objective with the metrics of its scale (a loss beside a
    score, not a throughput in the hundreds that would flatten both), then each metric alone."""
    names = _ordered(_reported(epochs), objectives)
    if not names:
        return []
    lead = [m for m in objectives if m in names] or names[:1]
    scale = _magnitude(epochs, lead[0])

    def near(name: str) -> bool:
        other = _magnitude(epochs, name)
        if scale == 0 or other == 0:
            return max(scale, other) <= 1
        return abs(math.log10(other / scale)) <= 1

    together = (lead + [n for n in names if n not in lead and near(n)])[:MAX_CURVES]
    return [tuple(together)] + [(n,) for n in names if (n,) != tuple(together)]


def _steps_table(epochs: list[dict[str, Any]], names: list[str]) -> Table:
    """A program's steps, the newest MAX_STEP_ROWS of them, a column per reported number."""
    shown = epochs[-MAX_STEP_ROWS:]
    caption = f"the last {len(shown)} of {len(epochs)} steps" if len(shown) < len(epochs) else None
    table = Table(box=None, header_style="bold", expand=False, caption=caption, caption_style="dim")
    table.add_column("step", justify="right", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right", no_wrap=True, overflow="ellipsis", min_width=6)
    for e in shown:
        table.add_row(str(e["epoch"]), *(number(e[n]) if _is_number(e.get(n)) else "-" for n in names))
    return table
