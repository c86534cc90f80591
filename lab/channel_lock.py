"""One ikedlab process at a time on a guest's control channel: a flock'd file per host that also says who
holds it and which guest command runs (lab/console.py takes it before it opens the line)."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from lab import private
from lab.errors import ConsoleBusy


class ChannelLock:
    """One ikedlab process at a time on a guest's control channel.

    A second `exec` (or a `status`) waits for the first instead of taking the line over with
    `virsh console --force`, which killed the other's command. The lock file also says who holds it and
    which guest command runs, so a waiter can name them, and a process killed mid-command leaves a note of
    what may still run in the guest.
    """

    def __init__(self, path: Path, host: str) -> None:
        self.path = path
        self.host = host
        self._file: IO[str] | None = None
        self.left_running: str | None = None  # a command whose end the previous holder never saw

    def acquire(self, timeout: float | None = None, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock; wait for it (for ever when `timeout` is None), saying once whom we wait for."""
        if self._file:
            return  # ours already (a console opened again on a new pty)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = private.open_file(self.path, "a+", encoding="utf-8")  # never through a planted link
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self.holder()
                if deadline is not None and time.monotonic() >= deadline:
                    f.close()
                    raise ConsoleBusy(self.host, holder) from None
                if not told and on_wait:
                    on_wait(f"{self.host}: waiting for the control console, in use by {holder}")
                    told = True
                time.sleep(0.1)  # the pace of polling a lock held by another process
        self._file = f
        previous = self._record()
        self.left_running = previous.get("running") if previous else None
        self._write(None)

    def holder(self) -> str:
        record = self._record()
        if not record:
            return "another ikedlab process"
        running = f", running `{record['running']}`" if record.get("running") else ""
        return f"pid {record.get('pid')} ({record.get('program', '?')}{running})"

    def running(self, command: str | None) -> None:
        """Note the guest command in flight (None: none)."""
        if self._file:
            self._write(command)

    def release(self) -> None:
        if self._file:
            self._write(None)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _record(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write(self, running: str | None) -> None:
        assert self._file
        program = " ".join(["ikedlab", *sys.argv[1:]]) if sys.argv[0].endswith("ikedlab") else sys.argv[0]
        record = {"pid": os.getpid(), "program": short(program), "running": running and short(running)}
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(record))
        self._file.flush()


def short(command: str) -> str:
    """A command as a message names it: its first line, at most 60 characters."""
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= 60 else first[:57] + "..."
