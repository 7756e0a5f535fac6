"""A program's output.log in the TUI: its tail, followed live while the trial runs, with search.

`LogView` draws only the lines on screen (Textual's line API, as its `Log` does), from at most
MAX_LINES kept lines; matches of the search are marked as each line is drawn, so a search costs
nothing until a key jumps to the next one. `LogPane` frames it, reads the file in a thread worker
(`log_tail.LogTail`: only the bytes appended since the last read) and polls with a chain of
one-shot timers while the trial runs, like the screens do.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from tui_hpo.widgets.log_tail import Chunk, LogTail

MAX_LINES = 5000  # lines kept in memory; older ones are dropped as new ones arrive
NOTES = ("[… ", "[tui-hpo: ")  # lines that are not the program's: what was skipped, the engine's notes


class LogView(ScrollView, can_focus=True):
    """Lines of cleaned text (see log_tail.clean), the newest at the bottom. Stays at the bottom
    while it is there (following); scrolled up, it stays put while lines arrive."""

    COMPONENT_CLASSES = {"log-view--match", "log-view--current", "log-view--note", "log-view--more"}
    DEFAULT_CSS = """
    LogView {
        height: 1fr;
        background: $surface;
        overflow-x: auto;
        overflow-y: scroll;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 0;  /* a row is worth more at 80x24: left/right scroll, › marks a cut line */
    }
    LogView > .log-view--match { background: $warning 45%; text-style: bold; }
    LogView > .log-view--current { background: $accent 30%; }
    LogView > .log-view--note { color: $text-muted; text-style: italic; }
    LogView > .log-view--more { color: $accent; text-style: bold; }
    """

    def __init__(self, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.first = 0  # the number (from 0, since the view was cleared) of lines[0]: dropped lines count
        self.pending: str | None = None  # the line still being written, shown last
        self.needle = ""  # what is searched for ("" for nothing)
        self.pattern: re.Pattern[str] | None = None
        self.current: int | None = None  # the number of the match jumped to
        self._width = 0

    @property
    def line_count(self) -> int:
        return len(self.lines) + (self.pending is not None)

    def clear(self) -> None:
        self.lines.clear()
        self.first, self.pending, self.current, self._width = 0, None, None, 0
        self.virtual_size = Size(0, 0)
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    def write(self, lines: list[str], pending: str | None) -> None:
        """Append whole lines and replace the unfinished last one."""
        if not lines and pending == self.pending:
            return
        following = self.is_vertical_scroll_end
        before = len(self.lines)
        self.lines.extend(lines)
        dropped = max(0, before + len(lines) - self.lines.maxlen) if self.lines.maxlen else 0
        self.first += dropped
        self.pending = pending
        if self.current is not None and self.current < self.first:
            self.current = None
        self._width = max(self._width, *(cell_len(line) for line in lines[-(self.lines.maxlen or 0):]),
                          cell_len(pending or ""))
        self.virtual_size = Size(self._width, self.line_count)
        if following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        elif dropped:  # the lines on screen moved up: keep showing them
            self.scroll_to(y=max(0, self.scroll_offset.y - dropped), animate=False, immediate=True)
        self.refresh()

    def line(self, index: int) -> str:
        """The line at `index` of those kept (the unfinished one last)."""
        return self.lines[index] if index < len(self.lines) else (self.pending or "")

    # ------------------------------------------------------------ search

    def search(self, query: str) -> int:
        """Mark lines holding `query` (any case, unless it has a capital) and jump to the first match
        from the top of the view down, round to the start; returns how many lines match."""
        self.needle = query
        self.pattern = re.compile(re.escape(query), 0 if query != query.lower() else re.IGNORECASE) if query \
            else None
        self.current = None
        self.refresh()
        if self.pattern is None:
            return 0
        self.jump(forward=True, start=self.first + self.scroll_offset.y)
        return len(self.matches())

    def matches(self) -> list[int]:
        """Numbers of the lines that match, oldest first."""
        if self.pattern is None:
            return []
        search = self.pattern.search
        return [self.first + i for i in range(self.line_count) if search(self.line(i))]

    def jump(self, forward: bool = True, start: int | None = None) -> tuple[int, int] | None:
        """Go to the next match after the current one (before it with forward=False), round the
        ends; returns (which match, of how many), or None without any."""
        found = self.matches()
        if not found:
            self.current = None
            self.refresh()
            return None
        if start is None:
            start = self.current + (1 if forward else -1) if self.current is not None else \
                self.first + self.scroll_offset.y
        if forward:
            target = next((n for n in found if n >= start), found[0])
        else:
            target = next((n for n in reversed(found) if n <= start), found[-1])
        self.current = target
        row = target - self.first
        x, y = self.scroll_offset
        width, height = self.scrollable_content_region.size  # without the scrollbar
        if not y <= row < y + height:
            y = max(0, row - height // 2)
        match = self.pattern.search(self.line(row))  # a match far right on a long line: scroll to it
        column = cell_len(self.line(row)[:match.start()]) if match else 0
        if not x <= column < x + width - 1:
            x = max(0, column - width // 3)
        self.scroll_to(x, y, animate=False, immediate=True)
        self.refresh()
        return found.index(target) + 1, len(found)

    # ------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width  # without the scrollbar, which covers the rest
        base = self.rich_style
        if index >= self.line_count:
            return Strip.blank(width, base)
        text = Text(self.line(index), no_wrap=True, end="")
        text.stylize(base)  # a span, not Text(style=): render() drops the base style of a Text without spans
        if text.plain.startswith(NOTES):
            text.stylize(self.get_component_rich_style("log-view--note"))
        if self.pattern is not None:
            if self.first + index == self.current:
                text.stylize(self.get_component_rich_style("log-view--current"))
            match_style = self.get_component_rich_style("log-view--match")
            for found in self.pattern.finditer(text.plain):
                text.stylize(match_style, found.start(), found.end())
        length = text.cell_len
        strip = Strip(text.render(self.app.console), length).crop_extend(scroll_x, scroll_x + width, base)
        if length > scroll_x + width and width > 1:  # more to the right: say so in the last cell
            more = Strip([Segment("›", base + self.get_component_rich_style("log-view--more"))], 1)
            strip = Strip.join([strip.crop(0, width - 1), more])
        return strip.apply_offsets(scroll_x, index)


class SearchInput(Input):
    """The search field: enter searches, escape closes it (and does not leave the screen)."""

    BINDINGS = [Binding("escape", "close", "close search", show=False)]
    DEFAULT_CSS = """
    SearchInput { dock: bottom; height: 1; border: none; padding: 0 1; display: none; }
    SearchInput.-open { display: block; }
    SearchInput:focus { border: none; }
    """

    def action_close(self) -> None:
        self.remove_class("-open")
        self.parent.query_one(LogView).focus()


class LogPane(Vertical):
    """A framed LogView on one file, read as it grows while `live`; search with `open_search`, `jump`."""

    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
        border: round $primary-darken-2;
        border-subtitle-color: $text-muted;
    }
    """
    POLL_S = 0.5  # seconds between the end of one read and the next while the trial runs
    RETRY_S = 2.0
    HINT = "/ search"

    class Read(Message, bubble=False):
        """One read of the file (each carries new lines: never collapsed)."""

        def __init__(self, tail: LogTail, chunk: Chunk) -> None:
            super().__init__()
            self.tail, self.chunk = tail, chunk

    def __init__(self, max_lines: int = MAX_LINES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_lines = max_lines
        self.tail: LogTail | None = None
        self.live = False
        self.missing: str | None = None  # why nothing is shown yet
        self.found: tuple[int, int] | None = None  # (match, of how many) after a search or jump
        self._next: Timer | None = None
        self._reading = False
        self._shown_caption: str | None = None

    def compose(self) -> ComposeResult:
        yield LogView(self.max_lines)
        yield SearchInput(placeholder="search the output (enter; n/N next/previous; escape closes)")

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def open(self, path: Path, live: bool) -> None:
        """Show this file (from its tail), following it while `live`. Opening the file shown already
        only changes `live`."""
        changed, self.live = live != self.live, live
        if self.tail is not None and self.tail.path == path:
            if live and not self._reading and self._next is None:
                self.poll()
            if changed:
                self._caption()
            return
        self.tail = LogTail(path)
        self.view.clear()
        self.poll()

    def set_live(self, live: bool) -> None:
        """Follow the file (while the trial runs) or stop after the next read (it has ended)."""
        if self.tail is not None:
            self.open(self.tail.path, live)

    # ------------------------------------------------------------ reading

    def poll(self) -> None:
        if self._next is not None:
            self._next.stop()
            self._next = None
        if self.tail is None or self._reading:
            return
        if not self.screen.is_current:  # under another screen: look again later
            self._next = self.set_timer(self.POLL_S, self.poll)
            return
        self._reading = True
        self._read(self.tail)

    @work(thread=True, exclusive=True, exit_on_error=False, group="log-tail")
    def _read(self, tail: LogTail) -> None:
        self.post_message(self.Read(tail, tail.read()))

    @on(Read)
    def _show(self, message: Read) -> None:
        self._reading = False
        if message.tail is not self.tail:  # another file was opened meanwhile
            self.poll()
            return
        chunk = message.chunk
        if chunk.reset:
            self.view.clear()
        self.missing = chunk.missing
        self.view.write(chunk.lines, chunk.pending)
        self._caption()
        if self.live:
            self._next = self.set_timer(self.POLL_S, self.poll)

    @on(Worker.StateChanged)
    def _failed(self, event: Worker.StateChanged) -> None:
        """A read that raised (it should not: LogTail turns OSError into a note) is shown and retried."""
        if event.worker.group == "log-tail" and event.state == WorkerState.ERROR:
            self._reading = False
            self.missing = f"reading the log failed: {event.worker.error}"
            self._caption()
            self._next = self.set_timer(self.RETRY_S, self.poll)

    # ------------------------------------------------------------ search

    def open_search(self) -> None:
        box = self.query_one(SearchInput)
        box.add_class("-open")
        box.focus()

    @on(Input.Submitted)
    def _search(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one(SearchInput).action_close()
        self.search(event.value)

    def search(self, query: str) -> None:
        count = self.view.search(query)
        current = self.view.current
        self.found = (self.view.matches().index(current) + 1, count) if current is not None else None
        if query and not count:
            self.app.notify(f"not in the output shown: {query}", severity="warning", timeout=4)
        self._caption()

    def jump(self, forward: bool = True) -> None:
        if self.view.pattern is None:
            self.open_search()
            return
        self.found = self.view.jump(forward)
        self._caption()

    def _caption(self) -> None:
        """The frame's subtitle: why nothing shows, else where the search is, else how to search.
        As Text: a path or a query is never read as markup."""
        if self.missing and not self.view.line_count:
            caption = self.missing
        elif self.view.pattern is not None:
            where = f"match {self.found[0]}/{self.found[1]}" if self.found else "no match"
            caption = f"{self.view.needle}: {where}  n/N next/prev"
        else:
            caption = ("following  " if self.live else "") + self.HINT
        if caption != self._shown_caption:  # setting it repaints the pane: not on every poll
            self._shown_caption = caption
            self.border_subtitle = Text(caption)
