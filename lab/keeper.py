"""The lab's console keeper: one small process per lab that holds every guest's control console open.

QEMU reads a pty console only while something holds the pty's other end; when nothing does, it looks again
once a second (QEMU's chardev/char-pty.c, "(re-)connect poll interval for idle guests"). So every new
`virsh console` waited 0.02-1.0 s (0.7 s typical, measured on a quiet lab) before its first Enter reached the
guest: most of `ikedlab exec`'s 1.1 s. The keeper holds each guest's control pty from the moment the lab's
guests run until they go, and never reads it (whoever holds the host's ChannelLock reads), so QEMU always
reads and an attach is one round trip, through virsh or not.

It also hands a duplicate of a pty's descriptor over a Unix socket in the lab's run directory (`keeper.sock`,
0600) to a short-lived command (`ikedlab exec`), which then talks to the guest's console directly: no virsh,
no libvirt connection, no topology to load. Long-lived processes keep using virsh (lab/lab.py): their
threads are woken by killing that carrier, which a bare descriptor cannot do.

The process that starts or restores a lab's guests starts the keeper (`start`, replacing an older one); it
ends by itself when any guest's QEMU goes (the pty hangs up: `down`, a restore's new QEMU, a crash), and
`stop` ends it at once. Without a keeper everything still works, one attach slower.

This module is imported by `ikedlab exec` before anything else: it stays small and imports nothing heavy.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import tty
from dataclasses import asdict, dataclass
from pathlib import Path

SOCKET = "keeper.sock"
LOCK = "keeper.lock"  # flock held by the live keeper, its pid inside
LOG = "keeper.log"
ANSWER_SECONDS = 2.0  # a keeper answers in microseconds; longer means it is stuck: go through virsh
STOP_SECONDS = 5.0


@dataclass(frozen=True)
class Login:
    """How a console turns into a root shell (the platform's LoginFacts, as the keeper hands them out)."""

    user: str | None = None
    password: str | None = None
    password_prompt: str = r"[Pp]assword:"


@dataclass(frozen=True)
class Held:
    """One host's control console as a keeper hands it out: a descriptor of its pty, now the caller's."""

    fd: int
    login: Login


# --- the caller's side -------------------------------------------------------------------------------------
def borrow(run_dir: Path, host: str) -> Held | None:
    """`host`'s control pty from the lab's keeper; None when no keeper serves it (the caller goes through
    virsh)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(ANSWER_SECONDS)
        try:
            s.connect(str(run_dir / SOCKET))
            s.send(json.dumps({"host": host}).encode())
            message, fds, _flags, _address = socket.recv_fds(s, 4096, 1)
        except OSError:
            return None
    try:
        answer = json.loads(message)
        login = Login(**answer["login"]) if answer.get("ok") and fds else None
    except (ValueError, KeyError, TypeError):
        login = None
    if login is None:
        for fd in fds:
            os.close(fd)
        return None
    return Held(fds[0], login)


def running(run_dir: Path) -> int | None:
    """The pid of the lab's live keeper, or None."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it: no keeper
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(fd)


def stop(run_dir: Path) -> None:
    """End the lab's keeper, if one runs, and wait until it is gone."""
    deadline = time.monotonic() + STOP_SECONDS
    signalled: set[int] = set()
    while (pid := running(run_dir)) is not None or _starting(run_dir):
        if pid is not None and pid not in signalled:
            _kill(pid, signal.SIGTERM)
            signalled.add(pid)
        if time.monotonic() > deadline:
            if pid is not None:
                _kill(pid, signal.SIGKILL)
            return
        time.sleep(0.01)  # the pace of asking a lock whether its holder is gone


def _starting(run_dir: Path) -> bool:
    """A keeper holds its lock but has not written its pid yet."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return not os.pread(fd, 32, 0).strip()
    finally:
        os.close(fd)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def start(
    run_dir: Path, ptys: dict[str, Path], logins: dict[str, Login], also: dict[str, Path] | None = None
) -> subprocess.Popen | None:
    """Start the lab's keeper on each host's control pty (`ptys`), after ending an older one; `also`: ptys
    only held, never handed out (each guest's files channel, lab/delivery.py). Returns at once (the keeper
    answers within ~0.1 s; a caller that asks before gets None from `borrow`); None when no pty could be
    opened."""
    stop(run_dir)
    fds: dict[str, int] = {}
    held: dict[str, int] = {}
    try:
        for table, wanted in ((fds, ptys), (held, also or {})):
            for host, path in wanted.items():
                try:
                    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
                except OSError:
                    continue  # that guest is gone already: the others are still worth holding
                tty.setraw(fd)  # as QEMU made it: no echo, no line editing, bytes through unchanged
                table[host] = fd
        if not fds:
            return None
        manifest = {
            "hosts": {host: {"fd": fd, "login": asdict(logins[host])} for host, fd in fds.items()},
            "also": held,
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / LOG).open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lab.keeper", str(run_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=[*fds.values(), *held.values()],
                start_new_session=True,  # the terminal's Ctrl-C is for the command, not for the lab's keeper
                cwd="/",
                env={**os.environ, "PYTHONPATH": _package_parent()},
            )
        assert proc.stdin
        with proc.stdin:
            proc.stdin.write(json.dumps(manifest).encode())  # on stdin: a password is no one's to see in ps
        return proc
    finally:
        for fd in [*fds.values(), *held.values()]:
            os.close(fd)


def _package_parent() -> str:
    parent = str(Path(__file__).resolve().parent.parent)
    extra = os.environ.get("PYTHONPATH")
    return f"{parent}{os.pathsep}{extra}" if extra else parent


# --- the keeper's side -------------------------------------------------------------------------------------
def serve(run_dir: Path, held: dict[str, Held], also: dict[str, int] | None = None) -> int:
    """Hold the ptys and hand out the control ones until one hangs up (its QEMU is gone) or SIGTERM."""
    lock = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("keeper: another keeper holds this lab's consoles", file=sys.stderr)
        return 1
    os.ftruncate(lock, 0)
    os.pwrite(lock, str(os.getpid()).encode(), 0)
    path = run_dir / SOCKET
    path.unlink(missing_ok=True)  # a dead keeper's: the lock is ours, so is the name
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_mask = os.umask(0o077)  # 0600 from the start: the consoles are root shells
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    listener.listen(8)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    by_fd = {h.fd: name for name, h in held.items()} | {fd: name for name, fd in (also or {}).items()}
    for fd in by_fd:
        poller.register(fd, 0)  # hang-ups only: what the guest writes is not ours to read
    try:
        while True:
            for fd, _events in poller.poll():
                if fd in by_fd:
                    gone = by_fd[fd]
                    print(f"keeper: a pty of {gone} hung up (its QEMU is gone); ending", file=sys.stderr)
                    return 0
                _answer(listener, held)
    finally:
        if path.exists():
            path.unlink()


def _answer(listener: socket.socket, held: dict[str, Held]) -> None:
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        conn.settimeout(ANSWER_SECONDS)
        try:
            request = json.loads(conn.recv(4096) or b"null")
            host = held.get(str(request.get("host"))) if isinstance(request, dict) else None
            if host is None:
                conn.send(json.dumps({"ok": False, "hosts": sorted(held)}).encode())
            else:
                answer = {"ok": True, "login": asdict(host.login)}
                socket.send_fds(conn, [json.dumps(answer).encode()], [host.fd])
        except (OSError, ValueError):
            pass  # a caller that went away, or sent nonsense: it goes through virsh


def main(argv: list[str]) -> int:
    os.umask(0o077)  # lab.private.restrict_umask, without importing the package (a keeper starts fast)
    run_dir, manifest = Path(argv[0]), json.loads(sys.stdin.read())
    held = {name: Held(int(h["fd"]), Login(**h["login"])) for name, h in manifest["hosts"].items()}
    return serve(run_dir, held, {name: int(fd) for name, fd in manifest.get("also", {}).items()})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
