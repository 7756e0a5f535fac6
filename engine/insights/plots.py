"""Figures of a study as PNG files plus one self-contained HTML report, for `tui-hpo visualize`.

Optuna draws the figures (`optuna.visualization.matplotlib`), so they look like what its users
already know; this module decides what can be drawn, says why when something cannot, and writes
the files atomically. Matplotlib runs on the Agg backend: no window and no display, so it works
over SSH and in CI. Plain data functions (`history`, `curves`) feed the terminal charts too.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot is first imported: never open a window

import matplotlib.pyplot as plt
import optuna
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter
from optuna.visualization import matplotlib as figures

from engine.artifacts import write_atomic
from engine.config.space import train_key, train_params
from engine.errors import UserError
from engine.insights.results import best_trials, top_rows
from engine.insights.summary import importance, summary
from engine.storage.states import SweepState

States = optuna.trial.TrialState

DPI = 110
FIGSIZE = (8.0, 5.0)  # inches; Optuna's slice plot gives each panel half this width
MAX_PARALLEL = 8  # axes in the parallel-coordinate plot
MAX_SLICE = 4  # panels side by side in the slice plot
MAX_CONTOUR = 3  # a 3x3 grid of parameter pairs is the most that stays readable
MAX_LEGEND = 12  # learning curves: past this many trials the legend is taller than the plot
TITLES = {
    "optimization_history": "Optimisation history",
    "param_importances": "Parameter importance",
    "parallel_coordinate": "Parallel coordinates",
    "slice": "Slice",
    "contour": "Contour",
    "learning_curves": "Learning curves",
}
CAPTIONS = {  # what each figure shows, and the limits that keep it readable; {metric} is filled in
    "optimization_history": "{metric} of each completed trial; the line is the best so far.",
    "param_importances": "How much each parameter mattered for {metric} (PED-ANOVA, sums to 1).",
    "parallel_coordinate": f"Each line is a completed trial, across the {MAX_PARALLEL} most important parameters "
                           "at most.",
    "slice": f"{{metric}} against each of the {MAX_SLICE} most important parameters at most.",
    "contour": f"{{metric}} interpolated over pairs of the {MAX_CONTOUR} most important parameters at most.",
    "learning_curves": "The value each trial reported after each step (epoch, or fold with cross-validation), "
                       "pruned trials included: pruning stopped them early.",
}


@dataclass(frozen=True)
class Objective:
    """What the figures plot: the first objective, by its metric name."""

    name: str
    maximize: bool
    # None for a single objective, so Optuna also draws its best-so-far line; multi-objective
    # studies need an explicit target.
    target: Callable[[optuna.trial.FrozenTrial], float] | None


@dataclass(frozen=True)
class Analysis:
    """What the figures, the report and the terminal charts share, computed once."""

    summary: dict[str, Any]
    objective: Objective
    importance: dict[str, float]  # most important first; empty when it cannot be computed
    importance_error: str | None
    notes: list[str]


@dataclass(frozen=True)
class Written:
    """The files `write_analysis` wrote, and each figure it could not draw with the reason."""

    folder: Path
    files: list[Path]
    skipped: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"files": [str(p) for p in self.files],
                "skipped": [{"figure": name, "reason": reason} for name, reason in self.skipped]}


def objective(study: optuna.Study, metrics: list[str]) -> Objective:
    """The first objective, which every figure plots."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    multi = len(study.directions) > 1
    return Objective(name=metrics[0], maximize=maximize, target=(lambda t: t.values[0]) if multi else None)


def analyse(study: optuna.Study, url: str) -> Analysis:
    """Summary, objective, importance and the caveats worth printing (multi-objective, running)."""
    report = summary(study, url)
    metrics = report["metrics"]  # one name per objective
    target = objective(study, metrics)
    try:
        scores, error = importance(study), None
    except UserError as exc:
        scores, error = {}, exc.detail
    notes = []
    if len(study.directions) > 1:
        notes.append(f"multi-objective study ({', '.join(metrics)}): the figures show the first "
                     f"objective, {target.name}; the report lists the Pareto front")
    counts = report["counts"]
    if counts["RUNNING"] or report["state"] == SweepState.RUNNING:
        notes.append(f"study still running ({counts['RUNNING']} trial(s) in progress): the figures show the "
                     f"{counts['COMPLETE']} trial(s) completed so far")
    return Analysis(report, target, scores, error, notes)


def history(study: optuna.Study, target: Objective) -> tuple[list[int], list[float], list[float]]:
    """(trial numbers, values, best so far) of the completed trials, first objective."""
    complete = study.get_trials(deepcopy=False, states=(States.COMPLETE,))
    numbers = [t.number for t in complete]
    values = [t.values[0] for t in complete]
    best: list[float] = []
    for value in values:
        best.append(value if not best else (max if target.maximize else min)(best[-1], value))
    return numbers, values, best


def curves(study: optuna.Study, n: int = 5) -> dict[int, list[tuple[int, float]]]:
    """Intermediate values (step, value) of the n best completed trials, best first."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False, states=(States.COMPLETE,))}
    out = {}
    for row in top_rows(study, n):
        points = sorted(by_number[row["number"]].intermediate_values.items())
        if points:
            out[row["number"]] = points
    return out


class _Computed(optuna.importance.BaseImportanceEvaluator):
    """Hands Optuna's importance plot the scores `engine.insights.summary.importance` computed, so the PNG
    shows the same numbers as `tui-hpo importance` and the terminal (and nothing is computed twice)."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def evaluate(self, study: optuna.Study, params: list[str] | None = None, *,
                 target: Callable[[optuna.trial.FrozenTrial], float] | None = None) -> dict[str, float]:
        return self.scores


def _plan(study: optuna.Study, analysis: Analysis) -> dict[str, Callable[[], Any] | str]:
    """Each figure as a function that draws it, or the reason it cannot be drawn."""
    complete = study.get_trials(deepcopy=False, states=(States.COMPLETE,))
    # Optuna's figures take its own names: a per-case choice list (`batch_size[model=test_vit]`)
    # is an axis of its own, labelled so, next to its key's plain one.
    names = sorted({name for t in complete for name in t.params})
    ranked = [name for key in analysis.importance for name in names if train_key(name) == key] or names
    kwargs = {"target": analysis.objective.target, "target_name": analysis.objective.name}

    def needs(trials: int, params: int) -> str | None:
        if len(complete) < trials:
            return f"needs {trials}+ completed trial(s), the study has {len(complete)}"
        if len(ranked) < params:
            return f"needs {params}+ parameters, the study has {len(ranked)}"
        return None

    def optimisation_history() -> Any:
        axes = figures.plot_optimization_history(study, **kwargs)
        if analysis.objective.target is not None:  # Optuna draws no best-so-far line for a custom target
            numbers, _, best = history(study, analysis.objective)
            axes.plot(numbers, best, color=plt.get_cmap("tab10")(3), alpha=0.5, label="Best Value")
            axes.legend(bbox_to_anchor=(1.05, 1.0), loc="upper left")
        return axes

    def learning_curves() -> Any:
        axes = figures.plot_intermediate_values(study)
        axes.set_ylabel(analysis.objective.name)
        if len(axes.get_lines()) > MAX_LEGEND and axes.get_legend():
            axes.get_legend().remove()
        return axes

    reported = any(t.intermediate_values for t in study.get_trials(
        deepcopy=False, states=(States.COMPLETE, States.PRUNED, States.RUNNING)))
    return {
        "optimization_history": needs(1, 0) or optimisation_history,
        "param_importances": analysis.importance_error or needs(2, 1) or (
            lambda: figures.plot_param_importances(study, _Computed(analysis.importance), **kwargs)),
        "parallel_coordinate": needs(1, 1) or (lambda: _clear_colorbar(figures.plot_parallel_coordinate(
            study, params=ranked[:MAX_PARALLEL], **kwargs))),
        "slice": needs(1, 1) or (lambda: figures.plot_slice(study, params=ranked[:MAX_SLICE], **kwargs)),
        "contour": needs(2, 2) or (lambda: figures.plot_contour(study, params=ranked[:MAX_CONTOUR], **kwargs)),
        "learning_curves": learning_curves if reported else
        "no trial reported intermediate values (multi-objective studies and studies without pruning do not)",
    }


def _tidy(figure: Any) -> None:
    """Readability fixes over Optuna's layouts: a log axis (learning rates) labels so many minor
    ticks that they overlap, and long category names (timm models) overlap unless rotated."""
    for axes in figure.axes:
        for axis, (low, high) in ((axes.xaxis, axes.get_xlim()), (axes.yaxis, axes.get_ylim())):
            if axis.get_scale() != "log" or low <= 0:
                continue
            if abs(math.log10(high / low)) >= 2:  # two decades or more: the powers of ten suffice
                axis.set_minor_formatter(NullFormatter())
            else:  # label 2 and 5 times each power of ten, no more
                axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(9, 9)))
    figure.canvas.draw()  # tick labels get their text and size only when drawn
    for axes in figure.axes:
        labels = [t for t in axes.get_xticklabels() if t.get_visible() and t.get_text() and not t.get_rotation()]
        labels += [t for t in axes.xaxis.get_minorticklabels() if t.get_visible() and t.get_text()]
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda box: box.x0)
        if any(left.x1 > right.x0 for left, right in itertools.pairwise(boxes)):
            plt.setp(labels, rotation=30, ha="right")


def _clear_colorbar(axes: Any) -> Any:
    """Optuna puts the colour bar of the parallel-coordinate plot over the tick labels of the
    last axis (category names are long): move it right of the widest label."""
    figure = axes.get_figure()
    colorbar = axes.collections[0].colorbar if axes.collections else None
    if colorbar is None:
        return axes
    figure.canvas.draw()  # label sizes are known only once drawn
    right = max((label.get_window_extent().x1 for other in figure.axes if other is not colorbar.ax
                 for label in other.get_yticklabels()), default=0.0)
    x0 = figure.transFigure.inverted().transform((right, 0))[0] + 0.03
    box = colorbar.ax.get_position()
    colorbar.ax.set_position((max(box.x0, x0), box.y0, box.width, box.height))
    return axes


def _png(drawn: Any) -> bytes:
    """The figure behind Optuna's Axes (or grid of Axes) as PNG bytes; the figure is closed."""
    axes = drawn.flat[0] if hasattr(drawn, "flat") else drawn
    figure = axes.get_figure()
    _tidy(figure)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def write_analysis(study: optuna.Study, analysis: Analysis, folder: Path) -> Written:
    """Draw every figure that can be drawn into `folder` as NAME.png, then report.html.

    A figure that cannot be drawn now also loses its PNG from an earlier run, so the folder
    always matches the report."""
    files, skipped, images = [], [], {}
    for name, plan in _plan(study, analysis).items():
        path = folder / f"{name}.png"
        if isinstance(plan, str):
            skipped.append((name, plan))
            path.unlink(missing_ok=True)
            continue
        try:
            # rc_context also undoes the global style Optuna sets (ggplot) when the figure is done.
            with warnings.catch_warnings(), matplotlib.rc_context({"figure.figsize": FIGSIZE}):
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                png = _png(plan())
        except ValueError as exc:  # an edge case Optuna refuses to draw: lose one figure, not the report
            plt.close("all")
            skipped.append((name, f"Optuna could not draw it: {exc}"))
            path.unlink(missing_ok=True)
            continue
        write_atomic(path, png)
        files.append(path)
        images[name] = png
    report = folder / "report.html"
    write_atomic(report, report_html(study, analysis, images, skipped))
    return Written(folder, [*files, report], skipped)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    """An HTML table; every cell is escaped."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _summary_rows(report: dict[str, Any], metrics: list[str]) -> list[list[Any]]:
    counts = report["counts"]
    planned = f" (of {report['n_trials']} planned)" if report["n_trials"] else ""
    rows: list[list[Any]] = [
        ["state", report["state"]],
        ["trials", f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, "
                   f"{counts['RUNNING']} running{planned}"],
    ]
    if report["best"] is not None:
        best = report["best"]
        rows += [[f"best {metrics[0]}", f"{_fmt(best['value'])} (trial {best['trial']})"],
                 ["best params", _params(best["params"])]]
    elif report.get("pareto_front"):
        rows.append(["best", f"a Pareto front of {len(report['pareto_front'])} trial(s), below"])
    else:
        rows.append(["best", "no completed trial yet"])
    rows += [["compute", str(timedelta(seconds=round(report["compute_seconds"])))],
             ["saved by pruning", str(timedelta(seconds=round(report["pruning_saved_seconds"])))]]
    rows += [["failed", f"{f['count']}× {f['reason']}"] for f in report["failures"]]
    return rows


def report_html(study: optuna.Study, analysis: Analysis, images: dict[str, bytes],
                skipped: list[tuple[str, str]]) -> str:
    """One HTML file with no external resource (figures inlined as data URIs), to mail or archive."""
    report = analysis.summary
    metrics = report["metrics"]
    title = f"Study '{report['study']}'"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in analysis.notes]
    parts += ["<h2>Summary</h2>", _table(None, _summary_rows(report, metrics))]
    front = best_trials(study) if len(metrics) > 1 else []
    if front:
        parts += [f"<h2>Pareto front ({len(front)} trials)</h2>",
                  _table(["trial", *metrics, "params"],
                         [[t.number, *t.values, _params(train_params(t.params))] for t in front])]
    top = top_rows(study, 10)
    if top:
        parts += [f"<h2>Top {len(top)} trials by {html.escape(analysis.objective.name)}</h2>",
                  _table(["trial", *metrics, "params", "epochs", "seconds"],
                         [[r["number"], *r["values"], _params(r["params"]), r["epochs"],
                           "-" if r["seconds"] is None else round(r["seconds"], 1)] for r in top])]
    if images:
        parts.append("<h2>Figures</h2>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        title = html.escape(TITLES[name])
        caption = html.escape(CAPTIONS[name].format(metric=analysis.objective.name))
        parts.append(f"<figure><img alt='{title}' src='data:image/png;base64,{data}'>"
                     f"<figcaption><b>{title}</b>: {caption}</figcaption></figure>")
    if skipped:
        parts += ["<h2>Not drawn</h2>", "<ul>", *(f"<li>{html.escape(TITLES[name])}: {html.escape(reason)}</li>"
                                                  for name, reason in skipped), "</ul>"]
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}.note{background:#fff6d5;padding:.5em}"
             "figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555}")
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}: "
            f"tui-hpo analysis</title><style>{style}</style></head>\n<body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
