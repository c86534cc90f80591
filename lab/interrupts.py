"""Ctrl-C while ikedlab changes a lab (`up`, a scenario session): said at once, then a cleanup that a second
Ctrl-C cannot cut short.

Within `guarded()`, the first Ctrl-C prints its message straight away and raises KeyboardInterrupt; from then
on (and from `Guard.shield()`, which a cleanup after any failure calls first) Ctrl-C only says that cleanup
is under way, so a second one never leaves guests or state behind.

One guard per process: a `guarded()` block inside another (a scenario session's `up`) shares the outer one's
state, so the first Ctrl-C is said once whichever block it lands in, and code anywhere can ask `stopping()`
to skip work a stopping process would throw away (putting a lab back just before it goes down).
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
        self.interrupted = False  # Ctrl-C was pressed: the process is on its way out

    def shield(self) -> None:
        """From here on Ctrl-C does not interrupt: the cleanup must run to its end."""
        self.shielded = True

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        if self.shielded:
            progress.say(f"  {STILL_CLEANING}")
            return
        self.shielded = True
        progress.say(self.message)
        raise KeyboardInterrupt


_active: Guard | None = None


def stopping() -> bool:
    """Ctrl-C was pressed inside a guarded block of this process: it is cleaning up to exit."""
    return _active is not None and _active.interrupted


@contextmanager
def guarded(message: str = STOPPING) -> Iterator[Guard]:
    """Handle Ctrl-C as the module says for the block (only the main thread can; elsewhere a no-op)."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield Guard(message)
        return
    if _active is not None:  # nested: the outer guard's state; a shield raised here ends with this block
        outer, was_shielded = _active, _active.shielded
        try:
            yield outer
        finally:
            outer.shielded = was_shielded or outer.interrupted
        return
    guard = _active = Guard(message)
    previous = signal.signal(signal.SIGINT, guard._on_sigint)
    try:
        yield guard
    finally:
        signal.signal(signal.SIGINT, previous)
        _active = None
