"""`tui-hpo visualize`: a study's figures in the terminal (plotext), and as PNG files plus one
self-contained report.html for a browser, an e-mail or an archive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.storage import Workspace
from tui_hpo.commands.study import study_folder, study_from
from tui_hpo.options import check_out_dir, study_options

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from engine.insights.plots import Analysis
    from tui_hpo.widgets.chart import Draw

MAX_WIDTH = 120  # wider charts only spread the same points further apart
HEIGHT = 16  # rows per chart: three charts fit one screen with the text between them
N_CURVES = 5  # learning curves of this many best trials: more become a tangle


@click.command()
@click.option("--out", "out_dir", metavar="DIR", callback=check_out_dir,
              help="Where the files go  [default: WORKDIR/STUDY/analysis]")
@click.option("--no-files", is_flag=True, help="Draw in the terminal only.")
@click.option("--no-terminal", is_flag=True, help="Write the files only.")
@study_options
def visualize(out_dir: str | None, no_files: bool, no_terminal: bool, workspace: Workspace,
              study_name: str | None, as_json: bool) -> None:
    """Optimisation history, importance, parallel coordinates, slice, contour and learning curves:
    in the terminal, and saved as PNG images plus one self-contained report.html."""
    from engine.errors import UserError

    if no_files and (no_terminal or as_json):
        raise UserError("nothing to do: --no-files leaves no files to list (--json) or to write (--no-terminal)",
                        key="--no-files")
    from engine.insights.plots import analyse, write_analysis

    study = study_from(workspace, study_name)
    url = workspace.url
    analysis = analyse(study, url)
    folder = Path(out_dir) if out_dir else study_folder(workspace, study.study_name) / "analysis"
    written = None if no_files else write_analysis(study, analysis, folder)
    if as_json:
        assert written is not None
        click.echo(json.dumps({"study": study.study_name, **written.to_dict(), "notes": analysis.notes}, indent=2))
        return
    from rich.console import Console

    console = Console(highlight=False)
    for note in analysis.notes:
        console.print(f"note: {note}", style="yellow")
    if not no_terminal:
        _draw(console, study, analysis)
    if written is not None:
        console.print(f"\nWrote {len(written.files)} file(s) to {written.folder}/", soft_wrap=True)
        for path in written.files:
            console.print(f"  {path.name}")
        if not analysis.summary["counts"]["COMPLETE"]:  # one reason for every figure: say it once
            console.print("  no figure: no completed trial yet (report.html has the counts and failures)",
                          style="dim")
            return
        for name, reason in written.skipped:
            console.print(f"  not drawn: {name}: {reason}", style="dim")


def _draw(console: Console, study: optuna.Study, analysis: Analysis) -> None:
    """The three charts worth a terminal: history, importance, learning curves of the best trials."""
    from rich.text import Text

    from engine.insights.plots import curves, history
    from tui_hpo.tables import importance_table
    from tui_hpo.widgets.chart import render

    counts = analysis.summary["counts"]
    if not counts["COMPLETE"]:
        console.print(f"study '{study.study_name}' has no completed trial yet ({counts['FAIL']} failed, "
                      f"{counts['PRUNED']} pruned, {counts['RUNNING']} running): nothing to draw")
        for failure in analysis.summary["failures"][:5]:
            console.print(f"  failed: {failure['count']}x {failure['reason']}")
        return
    width = min(shutil.get_terminal_size().columns, MAX_WIDTH)
    name = analysis.objective.name

    def show(chart: str) -> None:
        console.print()
        console.print(Text.from_ansi(chart), no_wrap=True, overflow="ignore", crop=False)

    show(render(_history_chart(*history(study, analysis.objective), name), width, HEIGHT))
    console.print()
    if analysis.importance:
        console.print(importance_table(analysis.importance, f"Parameter importance for {name}",
                                       width=min(40, max(10, width - 30))))
    else:
        console.print(f"parameter importance: {analysis.importance_error}")
    best_curves = curves(study, N_CURVES)
    if best_curves:
        show(render(_curves_chart(best_curves, name), width, HEIGHT))
    else:
        console.print("learning curves: no trial reported intermediate values")


def _history_chart(numbers: list[int], values: list[float], best: list[float], name: str) -> Draw:
    def draw(plt: Any) -> None:
        plt.scatter(numbers, values, marker="dot", color="cyan", label=name)
        plt.plot(numbers, best, marker="braille", color="green", label="best so far")
        plt.title(f"Optimisation history: {name} by trial")
        plt.xticks(_integer_ticks(numbers))
        plt.xlabel("trial")

    return draw


def _curves_chart(series: dict[int, list[tuple[int, float]]], name: str) -> Draw:
    def draw(plt: Any) -> None:
        for rank, (number, points) in enumerate(series.items()):
            plt.plot([p[0] for p in points], [p[1] for p in points], marker="braille",
                     label=f"#{number}" + (" best" if rank == 0 else ""))
        plt.title(f"Learning curves of the {len(series)} best trial(s): {name} by step")
        plt.xticks(_integer_ticks([step for points in series.values() for step, _ in points]))
        plt.xlabel("step")

    return draw


def _integer_ticks(values: list[int], n: int = 6) -> list[int]:
    """At most n evenly spread whole numbers: trials and steps have no fractions."""
    low, high = min(values), max(values)
    return sorted({round(low + (high - low) * i / (n - 1)) for i in range(n)})
