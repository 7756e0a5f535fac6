"""One trial's program as a process: started in a process group of its own, its output kept in
the trial's log and read for reports as it comes, and ended (SIGTERM, then SIGKILL after a
grace period) when the trial is pruned, runs out of time or the sweep stops.

The group never outlives its trial: it is killed whole whichever way the trial ends (a
program's own children included), and on Linux the program is killed with the worker even when
the worker dies by SIGKILL (PR_SET_PDEATHSIG), where no code of ours runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engine.command.metrics import MAX_JSON_LINE, parse_line

STDERR_TAIL = 20  # lines of stderr a failed trial's reason quotes
LOG_LIMIT = 256 << 20  # bytes of output kept per trial; a runaway program does not fill the disk
CHUNK = 1 << 16
POLL_S = 0.1
_EOF = object()

# (how the trial ends, why): "pruned", "timeout" or "stopped"; returned by the callbacks
Ending = tuple[str, str]


@dataclass
class Outcome:
    code: int | None  # the exit status (negative: killed by that signal); None: never started
    ending: Ending | None  # None: the program ended by itself
    stderr_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the program could not be started

    def failure(self) -> str | None:
        """Why a program that ended by itself failed, with the end of its stderr; None if it did not."""
        if self.error:
            return self.error
        if self.code == 0:
            return None
        how = f"killed by signal {-self.code}" if self.code is not None and self.code < 0 else f"exit code {self.code}"
        tail = "\n".join(self.stderr_tail)
        return f"the program ended with {how}" + (f"; its last stderr lines:\n{tail}" if tail else " (no stderr)")


def _die_with_parent() -> tuple[list[str], Callable[[], None] | None]:
    """How a program is asked to be SIGKILLed when its worker dies (Linux): util-linux's
    `setpriv --pdeathsig KILL` before the program, else a preexec_fn calling prctl, which costs
    more (Python cannot then start the child with vfork: ~20 ms against ~1 ms); elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return [], None
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--"], None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return [], None
    pr_set_pdeathsig = 1
    return [], lambda: prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


PDEATHSIG_PREFIX, PDEATHSIG = _die_with_parent()


class _Log:
    """The trial's output.log: both streams, in the order they arrive, up to LOG_LIMIT bytes."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "ab")  # noqa: SIM115 - closed by close(), after both readers
        self._lock = threading.Lock()
        self._written = 0

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._written >= LOG_LIMIT:
                return
            self._fh.write(data[:LOG_LIMIT - self._written])
            self._written += len(data)
            if self._written >= LOG_LIMIT:
                self._fh.write(f"\n[tui-hpo: output past {LOG_LIMIT >> 20} MiB is not kept]\n".encode())
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _pump(stream: IO[bytes], log: _Log, on_line: Callable[[bytes], None]) -> None:
    """Copy a stream to the log, handing each whole line to `on_line`. A line longer than
    MAX_JSON_LINE is logged but not handed over (nor kept in memory)."""
    partial, overlong = b"", False
    for chunk in iter(lambda: stream.readline(CHUNK), b""):
        log.write(chunk)
        if overlong:
            overlong = not chunk.endswith(b"\n")
            continue
        partial += chunk
        if chunk.endswith(b"\n"):
            on_line(partial)
            partial = b""
        elif len(partial) > MAX_JSON_LINE:
            partial, overlong = b"", True
    if partial and not overlong:
        on_line(partial)


class _Tail:
    """New whole lines of a file the program appends to (TUI_HPO_METRICS_FILE)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        self.offset += len(data)
        *whole, self.partial = (self.partial + data).split(b"\n")
        return whole

    def rest(self) -> list[bytes]:
        """Whole lines, and a last line without its newline once the program has ended."""
        lines = self.lines()
        last, self.partial = self.partial, b""
        return [*lines, last] if last.strip() else lines


def run(argv: list[str], env: Mapping[str, str], cwd: str, log_path: Path, metrics_path: Path,
        on_report: Callable[[dict[str, Any]], Ending | None], check: Callable[[], Ending | None],
        timeout: float | None, grace_s: float, on_start: Callable[[int], None] | None = None) -> Outcome:
    """Run the program to its end. `on_report` gets each report (stdout's JSON lines, then the
    metrics file's) and may end the trial (pruning); `check` is asked a few times a second
    (a stop, the user's prune); `on_start` gets the process group's id."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = _Log(log_path)
    started = time.monotonic()
    try:
        if PDEATHSIG_PREFIX and shutil.which(argv[0], path=env.get("PATH")) is None and "/" not in argv[0]:
            raise FileNotFoundError(2, "not found on PATH")  # said here, not by setpriv
        proc = subprocess.Popen([*PDEATHSIG_PREFIX, *argv], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=PDEATHSIG)
    except OSError as exc:
        log.write(f"[tui-hpo: cannot run {argv[0]}: {exc.strerror or exc}]\n".encode())
        log.close()
        return Outcome(None, None, error=f"cannot run {argv[0]!r} in {cwd}: {exc.strerror or exc}")
    if on_start is not None:
        on_start(proc.pid)
    reports: queue.Queue[Any] = queue.Queue()
    tail: deque[str] = deque(maxlen=STDERR_TAIL)

    def on_stdout(line: bytes) -> None:
        report = parse_line(line.decode("utf-8", "replace"))
        if report is not None:
            reports.put(report)

    def on_stderr(line: bytes) -> None:
        tail.append(line.decode("utf-8", "replace").rstrip()[:500])

    def reader(stream: IO[bytes], on_line: Callable[[bytes], None], last: bool) -> None:
        try:
            _pump(stream, log, on_line)
        finally:
            if last:
                reports.put(_EOF)

    assert proc.stdout is not None and proc.stderr is not None
    readers = [threading.Thread(target=reader, args=(proc.stdout, on_stdout, True), daemon=True),
               threading.Thread(target=reader, args=(proc.stderr, on_stderr, False), daemon=True)]
    for thread in readers:
        thread.start()
    metrics_file = _Tail(metrics_path)
    ending: Ending | None = None
    kill_at: float | None = None
    eof = False

    def end(why: Ending | None) -> None:
        nonlocal ending, kill_at
        if why is not None and ending is None:
            ending, kill_at = why, time.monotonic() + grace_s
            _signal_group(proc.pid, signal.SIGTERM)

    def handle(report: dict[str, Any]) -> None:
        if ending is None:
            end(on_report(report))

    def handle_lines(lines: list[bytes]) -> None:  # the metrics file's new lines
        for line in lines:
            report = parse_line(line.decode("utf-8", "replace"))
            if report is not None:
                handle(report)

    while True:
        if eof:  # stdout closed: the program is ending; look for its exit more often than reports came
            time.sleep(0.005)
            item = None
        else:
            try:
                item = reports.get(timeout=POLL_S)
            except queue.Empty:
                item = None
        if item is _EOF:
            eof = True
        elif item is not None:
            handle(item)
        handle_lines(metrics_file.lines())
        if _exited(proc):
            # Before the exit is collected (so its group id cannot be reused): whatever the
            # program left running in its group goes with it, which also closes its pipes.
            _signal_group(proc.pid, signal.SIGKILL)
            if not eof:
                _wait_eof(reports, handle)
            break
        now = time.monotonic()
        if ending is None:
            end(check())
        if ending is None and timeout is not None and now - started > timeout:
            end(("timeout", f"ran past budget.trial_timeout ({timeout:g} s)"))
        if kill_at is not None and now >= kill_at:
            _signal_group(proc.pid, signal.SIGKILL)
            kill_at = None
    code = proc.wait()
    for thread in readers:
        thread.join(timeout=2.0)
    while not reports.empty():
        item = reports.get_nowait()
        if item is not _EOF:
            handle(item)
    handle_lines(metrics_file.rest())
    log.close()
    return Outcome(code, ending, list(tail), time.monotonic() - started)


def _wait_eof(reports: queue.Queue[Any], handle: Callable[[dict[str, Any]], None]) -> None:
    """The program has exited and its group is killed: take its last reports until its stdout
    closes (at once, unless a process outside the group holds the pipe: then not for long)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            item = reports.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if item is _EOF:
            return
        handle(item)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the program has exited, without collecting its exit (waitid's WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # collected already
        return True
    except AttributeError:  # no waitid on this platform
        return proc.poll() is not None


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
