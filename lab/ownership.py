"""Who owns a lab: one lock file per lab in its run directory, held with flock(2) by the process that is
bringing the lab up, taking it down, or running scenarios on it.

The kernel drops a flock when its process dies, however it dies, so a dead owner's lab is free without any
cleanup; the file's text (pid, checkout, command, start time) only names the live owner to whoever is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import private
from lab.errors import LabError

LOCK_FILE = "owner.lock"
CHECKOUT = str(Path(__file__).resolve().parent.parent)  # the ikedlab code this process runs


@dataclass(frozen=True)
class Owner:
    pid: int
    checkout: str
    command: str
    since: float  # time.time() when the lab was claimed

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} ({self.command}, since {when}, checkout {self.checkout})"


def checkout_tag(checkout: str = CHECKOUT) -> str:
    """Six hex digits naming a checkout, for lab names: two checkouts' labs on one machine never share one."""
    return hashlib.sha256(checkout.encode()).hexdigest()[:6]


def this_process(command: str | None = None) -> Owner:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = command or shlex.join(argv)
    return Owner(os.getpid(), CHECKOUT, text if len(text) <= 80 else text[:77] + "...", time.time())


class Claim:
    """This process's hold on one lab; release() (or the process's death) frees it."""

    def __init__(self, path: Path, fd: int, owner: Owner, before: bytes | None = None) -> None:
        self.path, self._fd, self.owner = path, fd, owner
        self._before = before  # a passing claim's predecessor, written back at release

    def release(self) -> None:
        if self._fd >= 0:
            if self._before is not None:
                try:
                    os.ftruncate(self._fd, 0)
                    os.pwrite(self._fd, self._before, 0)
                except OSError:
                    pass  # the file only names owners; the lock itself goes with the descriptor
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def previous_owner(run_dir: Path) -> Owner | None:
    """Who claimed the lab last (alive or not), as its lock file says; None when nobody ever did."""
    try:
        with private.open_file(run_dir / LOCK_FILE, "r") as f:
            return Owner(**json.loads(f.read()))
    except (OSError, ValueError, TypeError, private.UnsafePathError):
        return None


def claim(lab: str, run_dir: Path, command: str | None = None, passing: bool = False) -> Claim:
    """Take the lab for this process, or refuse in one line naming the live owner.

    A lab whose last owner died is free: its lock went with it. A `passing` claim (housekeeping: the
    warm-state budget removing a snapshot) names itself while it holds the lab and then leaves the file as it
    found it, so the lab still belongs to the checkout that last used it (a scenario run refuses another
    checkout's lab: the budget's claim once made a lab refuse its own checkout).
    """
    path = run_dir / LOCK_FILE
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # A folder open to others is one an ikedlab older than its umask made (0755, its files 0644): all of
        # it made ours alone. Only then: a file left open in a private folder is a bug the leak check shows.
        made_open = bool(run_dir.stat().st_mode & 0o077)
        private.folder(run_dir, f"folder of lab '{lab}'")  # checked: ours, nobody else writes in it
        if made_open:
            private.tighten(run_dir)
        fd = private.open_fd(path, os.O_RDWR | os.O_CREAT)  # never through a link planted in its place
    except OSError as e:
        _forget(run_dir, created)
        raise state_error(lab, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        owner = previous_owner(run_dir)
        who = owner.describe() if owner else "another process"
        raise LabError(
            f"lab '{lab}' is in use by {who}",
            f"wait for it, or override with `{ikedlab_for(lab)} down --force`",
        ) from None
    me = this_process(command)
    try:
        before = os.pread(fd, 4096, 0) if passing else None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(asdict(me)).encode())
    except OSError as e:
        os.close(fd)
        _forget(run_dir, created)
        raise state_error(lab, e, path) from None
    return Claim(path, fd, me, before)


def _forget(run_dir: Path, created: bool) -> None:
    """Leave nothing behind after a failed claim: the run directory goes if this claim made it."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)


def state_error(lab: str, error: OSError, path: Path | None = None) -> LabError:
    """A lab's state cannot be written (a full or read-only state directory): one line naming the file."""
    where = error.filename or path or "the state directory"
    return LabError(
        f"lab '{lab}': cannot write {where}: {error.strerror or error}",
        "free space there or point IKEDLAB_STATE_DIR at a writable directory",
    )


def ikedlab_for(lab: str) -> str:
    """The command line that acts on this lab, for hints: `--name` unless it is the default lab."""
    return "ikedlab" if lab == "default" else f"ikedlab --name {lab}"
