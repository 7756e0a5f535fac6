"""What every Analysis plot is drawn with: the view the keys choose, what a drawing returns, state
colours, a colour scale, where a parameter's values sit on an axis, and plotext at a panel's size.

Colour never carries meaning alone: states also differ by marker, heat-map cells by shade, so the
plots still read under NO_COLOR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from tui_hpo.plots.snapshot import Param, Snapshot, Trial
from tui_hpo.widgets.chart import Draw, render

MIN_COMPLETE = 2  # an objective plot with fewer completed trials says what it waits for

# by Optuna state: plotext colour (plotext calls ANSI yellow "orange"), plotext marker, Rich style, one-cell symbol
STATE_COLOR = {"COMPLETE": "blue+", "PRUNED": "orange", "FAIL": "red", "RUNNING": "cyan", "WAITING": "white"}
STATE_MARKER = {"COMPLETE": "•", "PRUNED": "x", "FAIL": "✕", "RUNNING": "+", "WAITING": "·"}
STATE_STYLE = {"COMPLETE": "blue", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}
BEST_COLOR = "green+"
SHADES = "░▒▓█"  # worse to better, for cells whose colour may not show
# a perceptual ramp (viridis' ends and middle): worse is dark blue, better is yellow
RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


@dataclass(frozen=True)
class View:
    """What the keys chose: the objective a single-objective plot shows (multi-objective studies),
    the parameter (or pair of parameters) a plot is about, and whether colour shows."""

    objective: int = 0
    param: int = 0
    color: bool = True


@dataclass(frozen=True)
class Drawn:
    """A plot at one size: `caption` says what it shows (put after the plot's title), `body` the
    figure, or a sentence saying what will appear and why it cannot yet."""

    caption: str
    body: RenderableType


def empty(caption: str, why: str) -> Drawn:
    return Drawn(caption, Text(why, style="dim italic"))


def objective_caption(snap: Snapshot, view: View) -> str:
    """The metric a single-objective plot shows; for several objectives, which one (the panel's
    subtitle names the key, `o`)."""
    name = snap.metric(view.objective)
    if not snap.multi:
        return name
    return f"{name} (objective {view.objective + 1} of {len(snap.directions)})"


def scored(trial: Trial, objective: int) -> bool:
    """Whether `trial` has a finite value of `objective` to place on an axis."""
    return bool(trial.values) and math.isfinite(trial.values[objective])  # type: ignore[index]


def scored_trials(snap: Snapshot, view: View) -> list[Trial]:
    """The completed trials with a finite value of the objective in view: what its plots place."""
    return [t for t in snap.complete if scored(t, view.objective)]


def short(x: float) -> str:
    """An axis or legend number in at most about 8 characters."""
    return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.1e}"


def ramp_rgb(fraction: float) -> tuple[int, int, int]:
    """The colour at `fraction` (0 worse, 1 better) of RAMP, as plotext takes it."""
    fraction = min(1.0, max(0.0, fraction)) * (len(RAMP) - 1)
    low = min(int(fraction), len(RAMP) - 2)
    part = fraction - low
    r, g, b = (round(a + (c - a) * part) for a, c in zip(RAMP[low], RAMP[low + 1], strict=True))
    return r, g, b


def ramp(fraction: float) -> str:
    """The same colour as a Rich style."""
    return "rgb({},{},{})".format(*ramp_rgb(fraction))


def shade(fraction: float) -> str:
    return SHADES[min(len(SHADES) - 1, int(max(0.0, fraction) * len(SHADES)))]


def position(param: Param, x: Any) -> float | None:
    """Where value `x` of `param` sits on its axis: log10 for log scales, the choice's index for
    categorical ones; None for a value that has no place (missing or not finite)."""
    if param.kind == "categorical":
        return float(param.choices.index(x)) if x in param.choices else None
    if x is None or isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    if param.log:
        return math.log10(x) if x > 0 else None
    return float(x)


def tick_label(param: Param, at: float) -> str:
    """The label of axis position `at` (a position() value) in the parameter's own units."""
    if param.kind == "categorical":
        index = round(at)
        return str(param.choices[index]) if 0 <= index < len(param.choices) else ""
    return short(10 ** at if param.log else at)


def param_axis(plt: Any, axis: str, param: Param, at: Sequence[float], room: int) -> None:
    """Ticks of plotext's `axis` ("x" or "y") in `param`'s own units: its choices (cut to fit
    `room` cells), or five values of a log axis, which sits in log10 units (see position())."""
    if param.kind == "categorical":
        ticks = [float(i) for i in range(len(param.choices))]
        labels = [str(c)[:max(3, room // max(1, len(ticks)) - 1)] for c in param.choices]
        (plt.xlim if axis == "x" else plt.ylim)(-0.5, len(param.choices) - 0.5)
    elif param.log:
        low, high = min(at), max(at)
        ticks = [low + (high - low) * i / 4 for i in range(5)] if high > low else [low]
        labels = [tick_label(param, t) for t in ticks]
    else:
        return
    (plt.xticks if axis == "x" else plt.yticks)(ticks, labels)


def chosen(items: Sequence[Any], view: View) -> tuple[Any, str]:
    """The item the `p` key chose, and " (i/n, p: next)" to say so."""
    index = view.param % len(items)
    return items[index], (f" ({index + 1}/{len(items)}, p: next)" if len(items) > 1 else "")


def plotext(draw: Draw, width: int, height: int, view: View) -> Text:
    """A plotext figure filling `width` x `height` cells."""
    drawn = render(draw, width, height, "dark" if view.color else "clear").rstrip("\n")  # no blank last line
    return Text.from_ansi(drawn, no_wrap=True)


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """At most `n` of `items`, evenly spaced, the first and the last included: what a plot with
    one series per item can draw quickly."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]
