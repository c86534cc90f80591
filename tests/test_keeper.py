"""The console keeper (lab/keeper.py) against a stand-in for one guest: a local shell on its own pty, joined
to a second pty by a relay thread as QEMU joins a guest's serial port to the pty it offers (QEMU's master
end; the keeper and ikedlab open the other end). No VMs; the keeper runs as the real process `start` makes."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from lab import keeper
from lab.channel_lock import ChannelLock
from lab.cli import main
from lab.console import Console, Transcript

LOGIN = keeper.Login()  # the stand-in's console is a shell already, like the Linux appliance's


class SerialLine:
    """A shell behind a pty pair, bytes relayed both ways as QEMU relays a guest's serial port."""

    def __init__(self) -> None:
        self.shell = pexpect.spawn("/bin/sh", ["-i"], echo=False)  # the guest's tty, which makes ^C SIGINT
        self.master, slave = os.openpty()  # QEMU's side and the side it offers (`<source path=…>`)
        self.path = Path(os.ttyname(slave))
        os.close(slave)
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._run, daemon=True)
        self._relay.start()

    def _run(self) -> None:
        ends = {self.master: self.shell.child_fd, self.shell.child_fd: self.master}
        for fd in ends:
            os.set_blocking(fd, False)  # select says "readable" for a hang-up that a new opener then undoes
        while not self._stop.is_set():
            ready, _, _ = select.select(list(ends), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue  # nobody holds the offered end (EIO), or nothing after all: as QEMU, wait
                while data:
                    try:
                        data = data[os.write(ends[fd], data) :]
                    except BlockingIOError:
                        select.select([], [ends[fd]], [], 0.05)  # as QEMU's serial port, wait: never drop

    def hang_up(self) -> None:
        """QEMU exits: its end of the pty closes."""
        self._stop.set()
        self._relay.join()
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.master >= 0:
            self.hang_up()
        self.shell.close(force=True)


@pytest.fixture
def line() -> Iterator[SerialLine]:
    serial = SerialLine()
    yield serial
    serial.close()


@pytest.fixture
def kept(line: SerialLine, tmp_path: Path) -> Iterator[Path]:
    """A run directory whose keeper holds the stand-in guest 'local''s console."""
    run_dir = tmp_path / "labs" / "t"
    keeper.start(run_dir, {"local": line.path}, {"local": LOGIN})
    wait_until("the keeper answers", lambda: (run_dir / keeper.SOCKET).exists())
    yield run_dir
    keeper.stop(run_dir)


def wait_until(what: str, condition, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g}s", pytrace=False)
        time.sleep(0.02)


def console_on(run_dir: Path, host: str = "local") -> Console:
    held = keeper.borrow(run_dir, host)
    assert held is not None, "the keeper handed nothing out"
    console = Console(host, None, pty=held.fd, transcript=Transcript(run_dir / "console"))
    console.attach(10)
    return console


def test_the_keeper_hands_out_the_console_and_commands_run_on_it(kept: Path) -> None:
    console = console_on(kept)
    try:
        r = console.run("echo out; echo err >&2; false")
        assert (r.status, r.output) == (1, "out\nerr\n")
    finally:
        console.close()
    again = console_on(kept)  # the next caller gets the same console, still in step
    try:
        assert again.run("echo again").output == "again\n"
    finally:
        again.close()
    assert "local# echo again\nagain\n" in (kept / "console" / "local.log").read_text()


def test_nothing_is_handed_out_for_another_host_or_without_a_keeper(kept: Path, tmp_path: Path) -> None:
    assert keeper.borrow(kept, "resp") is None
    assert keeper.borrow(tmp_path / "no-lab", "local") is None
    keeper.stop(kept)
    assert keeper.running(kept) is None and not (kept / keeper.SOCKET).exists()
    assert keeper.borrow(kept, "local") is None


def test_the_keeper_ends_when_the_guest_goes(line: SerialLine, kept: Path) -> None:
    pid = keeper.running(kept)
    assert pid is not None
    line.hang_up()
    wait_until("the keeper ending after its pty hung up", lambda: keeper.running(kept) is None)
    assert not (kept / keeper.SOCKET).exists()
    assert "a pty of local hung up" in (kept / keeper.LOG).read_text()


def test_a_new_keeper_replaces_the_old_one(line: SerialLine, kept: Path) -> None:
    old = keeper.running(kept)
    keeper.start(kept, {"local": line.path}, {"local": LOGIN})
    wait_until("the new keeper answering", lambda: keeper.running(kept) not in (None, old))
    with pytest.raises(ProcessLookupError):
        os.kill(old, 0)  # type: ignore[arg-type]
    console = console_on(kept)
    console.close()


def test_what_the_guest_wrote_while_nobody_read_is_not_taken_for_output(line: SerialLine, kept: Path) -> None:
    console = console_on(kept)
    # Text a console reads as a state: a login prompt, on a console that has no login, would be an error.
    console.run("(sleep 0.3; echo stale output; printf 'login: ') &")
    console.close()
    time.sleep(1)  # the background job writes while no one reads: it waits in the pty the keeper holds
    again = console_on(kept)
    try:
        assert again.run("echo fresh").output == "fresh\n"
    finally:
        again.close()


def test_ctrl_c_reaches_the_guest_through_the_pty(kept: Path, tmp_path: Path) -> None:
    console = console_on(kept)
    marker = tmp_path / "finished"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            console.run(f"sleep 3 && touch {marker}")
        assert console.run("echo next").output == "next\n"
    finally:
        timer.cancel()
        console.close()
    time.sleep(3)  # long enough for the sleep to have finished had it not been interrupted
    assert not marker.exists()


def test_exec_goes_through_the_keeper_and_passes_the_exit_status(
    kept: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(kept.parent.parent))
    monkeypatch.setattr("lab.cli._lab", lambda args: pytest.fail("exec went through libvirt"))
    assert main(["--name", "t", "exec", "local", "--", "sh", "-c", "echo hi; exit 7"]) == 7
    assert capsys.readouterr().out == "hi\n"


def test_exec_waits_for_the_host_s_channel_lock_and_says_for_whom(
    kept: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(kept.parent.parent))
    first = ChannelLock(kept / "locks" / "local.console", "local")
    first.acquire()
    first.running("ping 10.0.2.2")
    threading.Timer(0.5, first.release).start()
    assert main(["--name", "t", "exec", "local", "--", "true"]) == 0
    said = capsys.readouterr().err
    assert f"local: waiting for the control console, in use by pid {os.getpid()}" in said
    assert "running `ping 10.0.2.2`" in said
