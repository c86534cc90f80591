"""Timed steps for long operations: `with step("Building the Linux appliance"):`.

A caller that wants the timings of its own steps collects them (`with timed() as timings:`) and hands them
back to its caller (`Lab.up` returns them): no list outlives the call.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from lab import redact

log = logging.getLogger("ikedlab")


@dataclass(frozen=True)
class Timing:
    """One finished step, or a part of one (`part`: inside another step, or timed on its own within one,
    as each guest's restore is; a total counts only the steps that are no part)."""

    name: str
    seconds: float
    part: bool = False


#: The collections open in this context (`timed`), innermost last; and how deep in steps it runs now.
_collecting: ContextVar[tuple[list[Timing], ...]] = ContextVar("collecting", default=())
_depth: ContextVar[int] = ContextVar("depth", default=0)

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def say(message: str) -> None:
    if not _quiet:
        print(redact.scrub(message), file=sys.stderr, flush=True)  # messages quote guests' output


@contextmanager
def timed() -> Iterator[list[Timing]]:
    """The timings of every step finished in this block (in this thread), in order."""
    found: list[Timing] = []
    token = _collecting.set((*_collecting.get(), found))
    try:
        yield found
    finally:
        _collecting.reset(token)


def _keep(timing: Timing) -> None:
    for found in _collecting.get():
        found.append(timing)


@contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"… {name}")
    depth = _depth.get()
    token = _depth.set(depth + 1)
    try:
        yield
    except BaseException:
        say(f"✗ {name} (failed after {time.monotonic() - start:.1f}s)")
        raise
    finally:
        _depth.reset(token)
    elapsed = time.monotonic() - start
    _keep(Timing(name, elapsed, part=depth > 0))
    say(f"✓ {name} ({elapsed:.1f}s)")


def record(name: str, seconds: float) -> None:
    """A part of a step timed on its own (one guest's restore): said and kept beside the steps."""
    _keep(Timing(name, seconds, part=True))
    say(f"  {name} ({seconds:.1f}s)")


def total(timings: list[Timing]) -> float:
    """The seconds of the steps, each counted once (parts are inside them)."""
    return sum(t.seconds for t in timings if not t.part)
