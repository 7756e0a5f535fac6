"""What every screen that reads in worker threads shares: hearing that a read failed.

Textual's Worker.StateChanged does not bubble, so only the screen that owns a worker learns that
it failed; a handler on the app never sees it. A polling screen whose read raised (the engine may
still be creating its tables) would stop polling for good, frozen on stale data. Here the failure
is shown, and the screen's poll runs again shortly.
"""

from __future__ import annotations

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState

RETRY_S = 2.0


class LiveScreen(Screen):
    POLL_GROUP: str | None = None  # the worker group whose failure calls for polling again

    def poll(self) -> None:
        """Read again; polling screens override this."""

    @on(Worker.StateChanged)
    def worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        self.app.worker_errors.append(f"{event.worker.name}: {event.worker.error!r}")
        self.notify(f"{event.worker.error}", title=f"{event.worker.group} failed", severity="error", timeout=10)
        if event.worker.group == self.POLL_GROUP:
            self.set_timer(RETRY_S, self.poll)
