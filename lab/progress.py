"""Timed steps for long operations: `with step("Building the Linux appliance"):`."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("ikedlab")

#: Each finished step's name and seconds, in order; `ikedlab up` and the benchmark read it.
timings: list[tuple[str, float]] = []

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def say(message: str) -> None:
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"… {name}")
    try:
        yield
    except BaseException:
        say(f"✗ {name} (failed after {time.monotonic() - start:.1f}s)")
        raise
    elapsed = time.monotonic() - start
    timings.append((name, elapsed))
    say(f"✓ {name} ({elapsed:.1f}s)")


def record(name: str, seconds: float) -> None:
    """A part of a step timed on its own (one guest's restore): said and kept beside the steps."""
    timings.append((name, seconds))
    say(f"  {name} ({seconds:.1f}s)")
