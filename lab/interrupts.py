"""Ctrl-C while a lab is being built: said at once, then a cleanup that a second Ctrl-C cannot cut short.

Within `guarded()`, the first Ctrl-C prints its message straight away and raises KeyboardInterrupt; from then
on (and from `Guard.shield()`, which a cleanup after any failure calls first) Ctrl-C only says that cleanup
is under way, so a second one never leaves guests or state behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lab import progress

STOPPING = "stopping, cleaning up…"
STILL_CLEANING = "still cleaning up; ikedlab exits once nothing is left behind"


class Guard:
    def __init__(self, message: str) -> None:
        self.message = message
        self.shielded = False

    def shield(self) -> None:
        """From here on Ctrl-C does not interrupt: the cleanup must run to its end."""
        self.shielded = True

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.shielded:
            progress.say(f"  {STILL_CLEANING}")
            return
        self.shielded = True
        progress.say(self.message)
        raise KeyboardInterrupt


@contextmanager
def guarded(message: str = STOPPING) -> Iterator[Guard]:
    """Handle Ctrl-C as the module says for the block (only the main thread can; elsewhere a no-op)."""
    guard = Guard(message)
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = signal.signal(signal.SIGINT, guard._on_sigint)
    try:
        yield guard
    finally:
        signal.signal(signal.SIGINT, previous)
