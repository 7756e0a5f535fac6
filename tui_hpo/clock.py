"""The viewer's notion of now: one function, so snapshot tests can fix the time they render."""

from __future__ import annotations

import time


def now() -> float:
    return time.time()
