"""The chain every live screen runs: read in a thread worker, draw on the UI thread, then arm the
next read. Each screen says only what to read (`read`, in the worker) and how to draw it (`show`).

- Reads never overlap: the next one is armed only after the last one was drawn, and one timer at
  most is pending (a resumed screen does not start a second chain).
- A screen that is not current stops reading; it reads again at once when it is shown again.
- A burst of results collapses into the newest (`Read.can_replace`).
- A read that raises (the engine may still be creating its tables) is shown, and the chain goes
  on after RETRY_S: Textual's Worker.StateChanged does not bubble, so only the screen that owns a
  worker hears that it failed, and a screen that stopped polling would freeze on stale data.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

RETRY_S = 2.0
POLL_GROUP = "poll"


class WorkerScreen(Screen):
    """A screen whose thread workers' failures are shown (and, for the poll, retried)."""

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        self.app.worker_errors.append(f"{event.worker.name}: {event.worker.error!r}")
        self.notify(f"{event.worker.error}", title=f"{event.worker.group} failed", severity="error", timeout=10)
        self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker) -> None:
        """What else to do when a worker failed (after it was shown)."""


class LiveScreen(WorkerScreen):
    POLL_S = 1.0  # seconds between the end of a draw and the next read

    class Read(Message, bubble=False):
        """What `read` returned, for `show`."""

        def __init__(self, data: Any) -> None:
            super().__init__()
            self.data = data

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LiveScreen.Read)

    _next: Timer | None = None
    _reading = False

    def read(self) -> Any:
        """Runs in a thread worker: fetch what the screen shows (never touch widgets here)."""
        return None

    def show(self, data: Any) -> None:
        """Runs on the UI thread with what `read` returned."""

    def on_mount(self) -> None:
        self.poll()

    def on_screen_resume(self) -> None:
        if self._next is None:
            self.poll()

    def poll(self) -> None:
        """Read now, unless a read is under way or the screen is hidden (the chain then waits for
        the screen to be shown again)."""
        self._cancel_next()
        if self._reading or not self.is_current or getattr(self.app, "reader", None) is None:
            return
        self._reading = True
        self._read_in_worker()

    def poll_in(self, seconds: float) -> None:
        """Arm the next read (replacing one already armed)."""
        self._cancel_next()
        self._next = self.set_timer(seconds, self.poll)

    def _cancel_next(self) -> None:
        if self._next is not None:
            self._next.stop()
            self._next = None

    @work(thread=True, exclusive=True, exit_on_error=False, group=POLL_GROUP)
    def _read_in_worker(self) -> None:
        self.post_message(self.Read(self.read()))

    @on(Read)
    def _draw(self, message: Read) -> None:
        try:
            self.show(message.data)
        finally:
            self._reading = False
            self.poll_in(self.POLL_S)

    def worker_failed(self, worker: Worker) -> None:
        if worker.group == POLL_GROUP:
            self._reading = False
            self.poll_in(RETRY_S)
