"""A trial's output.log read safely: from its tail, following it as it grows, with bounded memory.

A program's output is hostile input for a terminal: ANSI sequences would move the cursor or clear
the screen, a single line may be megabytes long, and bytes need not be UTF-8. Every line is
decoded with replacement characters, carriage-return redraws are reduced to what a terminal
shows last, escape sequences and other control characters are dropped, and long lines are cut.
No Textual here: the file side is plain code, run in a thread worker and tested on its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.command.argv import TrialFiles

MAX_LINE_CHARS = 1000  # a line is cut here for display (the file keeps it whole)
MAX_LINE_BYTES = MAX_LINE_CHARS * 4  # what is kept of a line that has not ended yet (UTF-8: 4 bytes a char)
TAIL_BYTES = 256 << 10  # opening a log: its last 256 KiB
READ_BYTES = 4 << 20  # following it: at most this much a read; output faster than that is skipped
# ESC sequences (CSI with its parameters, OSC and the other string commands up to their end, two-byte
# ones), C1 controls (U+0080-U+009F: U+009B is a CSI on its own), every C0 control but the tab, and the
# Unicode line separators and direction overrides (text that reorders what follows it on screen).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI ... final byte
                   r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC ... terminator
                   r"|\x1b[ -/]*[0-~]?"  # any other escape (charset selection, keypad mode, ...)
                   r"|[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(raw: bytes, limit: int = MAX_LINE_CHARS, cut: int = 0) -> str:
    """One line of output as safe display text: at most `limit` characters, then a note of how much
    more the line had (`cut`: bytes of it already dropped before `raw`)."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    text = text[text.rfind("\r") + 1:]  # a progress bar redrawn with \r: its last state, as a terminal shows
    text = _ANSI.sub("", text).expandtabs(4)
    if cut:
        return f"{text[:limit]} … [line cut: {cut + len(text[limit:].encode()):,} more bytes]"
    if len(text) > limit:
        return f"{text[:limit]} … [line cut: {len(text) - limit:,} more characters]"
    return text


@dataclass
class Chunk:
    """What one read found: whole new lines, the line still being written (None when the output
    ends with a newline), and whether the view must start afresh (the file was replaced or cut)."""

    lines: list[str]
    pending: str | None = None
    reset: bool = False
    missing: str | None = None  # why there is nothing to read (no such file yet, not readable)


@dataclass
class LogTail:
    """Follows one log file: each `read` returns what was appended since the last one. A file that
    shrinks or is replaced is read again from its tail. Call from one thread at a time."""

    path: Path
    tail_bytes: int = TAIL_BYTES
    read_bytes: int = READ_BYTES
    offset: int = -1  # -1: not opened yet
    _inode: int | None = None
    _partial: bytearray = field(default_factory=bytearray)
    _dropped: int = 0  # bytes of the current line beyond MAX_LINE_BYTES, thrown away
    _headless: bool = False  # reading starts inside a line: it is shown from there, marked "… "

    def read(self) -> Chunk:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return Chunk([], missing=f"no output yet: {self.path} does not exist")
        except OSError as exc:
            return Chunk([], missing=f"cannot read {self.path}: {exc.strerror or exc}")
        lines: list[str] = []
        reset = False
        if self.offset < 0 or stat.st_ino != self._inode or stat.st_size < self.offset:
            reset = self.offset >= 0
            self._inode = stat.st_ino
            start = max(0, stat.st_size - self.tail_bytes)
            if start:
                lines.append(f"[… the first {start:,} bytes are not shown]")
            self._start_at(start)
        if stat.st_size - self.offset > self.read_bytes:  # more than one read holds: the newest part
            start = stat.st_size - self.read_bytes
            if self._partial or self._dropped:
                lines.append(clean(bytes(self._partial), cut=self._dropped + start - self.offset))
            lines.append(f"[… {start - self.offset:,} bytes skipped: output faster than it is shown]")
            self._start_at(start)
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(stat.st_size - self.offset)
        except OSError as exc:
            return Chunk([], missing=f"cannot read {self.path}: {exc.strerror or exc}")
        self.offset += len(data)
        lines += self._split(data)
        pending = self._line() if self._partial or self._dropped else None
        return Chunk(lines, pending, reset)

    def _start_at(self, start: int) -> None:
        """Read from `start` on, one byte early: a newline there means `start` begins a line."""
        self.offset, self._partial, self._dropped = max(0, start - 1), bytearray(), 0
        self._headless = start > 0

    def _line(self) -> str:
        return ("… " if self._headless else "") + clean(bytes(self._partial), cut=self._dropped)

    def _split(self, data: bytes) -> list[str]:
        """Whole lines of `data` after what was left of the last read; the unfinished rest is kept,
        up to MAX_LINE_BYTES (a program printing a megabyte line costs no megabyte here)."""
        out: list[str] = []
        start = 0
        if self._headless and not self._partial and not self._dropped and data[:1] == b"\n":
            start, self._headless = 1, False  # the byte before the tail ended a line: no line was cut
        while True:
            newline = data.find(b"\n", start)
            piece = data[start:] if newline < 0 else data[start:newline]
            room = max(0, MAX_LINE_BYTES - len(self._partial))
            if len(piece) > room:
                self._dropped += len(piece) - room
                piece = piece[:room]
            self._partial += piece
            if newline < 0:
                return out
            out.append(self._line())
            self._partial, self._dropped, self._headless = bytearray(), 0, False
            start = newline + 1


def trial_log(stored: Any, workdir: Path, study: str, number: int) -> Path | None:
    """Where a trial's output.log is: the path its worker stored (user attr `log`), else the same
    place in this workspace (a relative path from another working directory, a study folder moved
    or mounted elsewhere); None for a trial without one (the built-in trainer's)."""
    if not isinstance(stored, str) or not stored:
        return None
    path = Path(stored)
    if path.is_file():
        return path
    here = TrialFiles.of(workdir / study, number).log
    return here if here.is_file() else path


def tail_lines(path: Path, count: int, tail_bytes: int = 64 << 10) -> list[str]:
    """The last `count` lines of a log (the one still being written included), cleaned; [] when
    the file cannot be read. For a glance (the dashboard's panel), not for following."""
    if count <= 0:
        return []
    chunk = LogTail(path, tail_bytes=tail_bytes).read()
    lines = [line for line in chunk.lines if not line.startswith("[… the first ")]  # a glance needs no note
    if chunk.pending:
        lines.append(chunk.pending)
    return lines[-count:]
