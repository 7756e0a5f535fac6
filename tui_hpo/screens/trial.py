"""One trial: params, per-epoch metrics (table and curves), system samples while it ran, its
events, and why it failed."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Static

from tui_hpo import clock
from tui_hpo.db import Event, Sample, StudyRow, TrialRow
from tui_hpo.format import duration, number
from tui_hpo.screens.base import WorkerScreen
from tui_hpo.tables import class_f1_text
from tui_hpo.widgets.chart import Chart

DETAIL_ATTRS = ("class_f1", "stopped_early")  # written by the worker when a trial finishes
METRICS = ("train_loss", "val_loss", "val_accuracy", "val_f1", "lr", "samples_per_s", "peak_mem_mb", "seconds")


class TrialScreen(WorkerScreen):
    CSS_PATH = "trial.tcss"
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "back"),
                Binding("p", "package", "write its model package")]

    class Loaded(Message, bubble=False):
        def __init__(self, row: TrialRow | None, epochs: list[dict[str, Any]], events: list[Event],
                     samples: list[Sample], attrs: dict[str, Any]) -> None:
            super().__init__()
            self.row, self.epochs, self.events, self.samples = row, epochs, events, samples
            self.attrs = attrs  # DETAIL_ATTRS the trial has

    def __init__(self, study: StudyRow, number_: int) -> None:
        super().__init__()
        self.study, self.number = study, number_
        self.row: TrialRow | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="trial-header", classes="bar")
        with Horizontal(id="trial-top"):
            yield Static(id="trial-params", classes="panel")
            yield Chart("metrics per epoch", id="trial-curves", classes="framed")
        with VerticalScroll(id="trial-body"):
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
        rows = [r for r in reader.trials(self.study.study_id, after_id=0) if r.number == self.number]
        row = rows[0] if rows else None
        epochs = reader.epochs(row.trial_id) if row else []
        events = reader.events(self.study.study_id, trial_number=self.number, limit=100)
        samples = reader.samples_between(row.start, row.complete or clock.now()) if row and row.start else []
        attrs = reader.trial_attrs(row.trial_id, DETAIL_ATTRS) if row else {}
        self.post_message(self.Loaded(row, epochs, events, samples, attrs))

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
        stopped = message.attrs.get("stopped_early")
        if stopped:
            fold = f" of fold {stopped['fold'] + 1}" if stopped["fold"] else ""  # 0 is a single split's too
            text.append(f"\n stopped early after epoch {stopped['after_epoch']}{fold}, valued at its best epoch "
                        f"{stopped['best_epoch']}", style="cyan")
        if row.retry_of is not None:
            text.append(f"\n a rerun of trial {row.retry_of}, whose worker died or was interrupted", style="cyan")
        if row.fail_reason:
            text.append(f"\n failed: {row.fail_reason}", style="bold red")
        header.update(text)
        params = Table.grid(padding=(0, 1))
        params.add_column(style="bold")
        params.add_column()
        for key, value in row.params.items():
            params.add_row(key, number(value))
        self.query_one("#trial-params", Static).update(params)
        self._epochs(message.epochs)
        self._per_class(message.attrs.get("class_f1"))
        self._system(message.samples)
        events = Text()
        for event in message.events:
            events.append(time.strftime("%H:%M:%S ", time.localtime(event.ts)), style="dim")
            events.append(event.message + "\n", style={"warning": "yellow", "error": "red"}.get(event.level, ""))
        box = self.query_one("#trial-events", Static)
        box.border_title = "events"
        box.update(events if message.events else Text("no events", style="dim"))

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

    def _epochs(self, epochs: list[dict[str, Any]]) -> None:
        table = Table(box=None, header_style="bold", expand=False)
        for column in ("fold", "epoch", *METRICS):
            table.add_column(column, justify="right")
        for e in epochs:
            table.add_row(str(e["fold"]), str(e["epoch"] + 1), *(number(e[m]) if e[m] is not None else "-"
                                                                  for m in METRICS))
        box = self.query_one("#trial-epochs", Static)
        box.border_title = "per-epoch metrics"
        box.update(table if epochs else Text("no epoch finished", style="dim"))
        chart = self.query_one("#trial-curves", Chart)
        if not epochs:
            chart.plot(None, None)
            return

        def draw(plt: Any) -> None:
            xs = list(range(1, len(epochs) + 1))
            for metric, color in (("val_f1", "green"), ("val_accuracy", "cyan"), ("val_loss", "red"),
                                  ("train_loss", "orange")):
                plt.plot(xs, [e[metric] for e in epochs], label=metric, color=color, marker="braille")
            plt.xlabel("epoch (all folds)")

        chart.plot(draw, len(epochs))

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
