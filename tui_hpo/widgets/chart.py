"""Terminal charts drawn with plotext, sized to the widget, redrawn only when data or size change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotext as plt
from rich.text import Text
from textual.widgets import Static

Draw = Callable[[Any], None]  # gets the plotext module, adds series to the current figure


def render(draw: Draw, width: int, height: int, theme: str = "clear") -> str:
    """The figure `draw` makes, `width` x `height` cells, as ANSI text: the one place plotext is set
    up, shared by the widget and the command line (`tui-hpo visualize`)."""
    plt.clf()
    # plotext caps figures at the terminal size it read at import (80x24 without a terminal, and
    # stale after the window grows): the widget's size is the only limit
    plt.limitsize(False, False)
    plt.plotsize(width - 1, height)  # one column spare: a full-width line would wrap
    plt.theme(theme)
    plt.canvas_color("default")
    plt.axes_color("default")
    plt.ticks_color("default")
    draw(plt)
    return plt.build()


class Chart(Static):
    """A plotext figure. `draw` is kept, so a resize redraws without new data."""

    DEFAULT_CSS = "Chart { height: 1fr; min-height: 6; }"

    def __init__(self, title: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.border_title = title
        self._draw: Draw | None = None
        self._key: Any = None

    def plot(self, draw: Draw | None, key: Any) -> None:
        """Replace the figure; `key` identifies the data, so unchanged data costs nothing."""
        if key == self._key and draw is not None:
            return
        self._draw, self._key = draw, key
        self._render_chart()

    def on_resize(self) -> None:
        self._render_chart()

    def _render_chart(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        if width < 10 or height < 4:
            return
        if self._draw is None:
            self.update(Text("no data yet", style="dim"))
            return
        # Textual takes NO_COLOR out of the environment and sets app.no_color instead.
        self.update(Text.from_ansi(render(self._draw, width, height, "clear" if self.app.no_color else "dark")))
