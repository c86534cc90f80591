"""One serial console under pexpect: log in, put the shell in a known state, run framed commands.

Every command is sent as one line that prints a begin marker, runs the command, and prints an end marker
carrying its exit status, so output and status are read from the frame, never guessed from prompts. The
markers never appear whole in the text we send (the begin marker is printed from two halves, `'@@IKL' 'B…'`,
the end marker from a printf format), so an echoed command line can never look like one.
"""

from __future__ import annotations

import codecs
import math
import re
import secrets
import signal
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pexpect
from pexpect import fdpexpect

from lab import private, redact
from lab.channel_lock import ChannelLock, short
from lab.errors import CommandError, ConsoleError, ConsoleTimeout
from lab.settings import COMMAND, LOGIN, RESUMED_SYNC

_PROMPT = r"[#$] ?$|[#$] "
SHELL_PROMPT = "# "  # the control shell's prompt once in a known state: what `_PROMPT` finds at attach


@dataclass(frozen=True)
class Result:
    command: str
    status: int
    output: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class Transcript:
    """Commands and their output, one file per host plus one merged file for the lab: `[host +1.2s] # cmd`.

    Evidence that may be published: every entry passes the redactor (`ip xfrm state` prints SA keys)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._files: dict[str, IO[str]] = {}

    def path(self, host: str) -> Path:
        return self.directory / f"{host}.log"

    def record(self, host: str, command: str, output: str, status: int | None) -> None:
        stamp = f"[{host} +{time.monotonic() - self.start:.1f}s]"
        tail = "" if status in (0, None) else f"(exit {status})\n"
        entry = redact.scrub(
            f"{host}# {command}\n{output}{'' if output.endswith(chr(10)) or not output else chr(10)}{tail}"
        )
        with self._lock:
            if host not in self._files:
                self._files[host] = private.open_file(self.path(host), "a", encoding="utf-8")
                self._files["*"] = self._files.get("*") or private.open_file(
                    self.directory / "all.log", "a", encoding="utf-8"
                )
            self._files[host].write(entry)
            self._files[host].flush()
            self._files["*"].write(f"{stamp} {entry}")
            self._files["*"].flush()

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


class Console:
    """A shell on a guest's serial console. Wraps pexpect: a spawned program that carries the console
    (virsh console), or the console's pty itself."""

    def __init__(
        self,
        host: str,
        argv: list[str] | None,
        *,
        pty: int | None = None,
        transcript: Transcript | None = None,
        raw_log: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        password_prompt: str = r"[Pp]assword:",
        lock: ChannelLock | None = None,
        lock_timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        connected: str | None = None,
    ) -> None:
        """`connected`: a regex the console program prints once its line is through (virsh console: its
        escape-character line). Nothing is typed before it: virsh drops what it reads while it connects,
        and a lost Enter cost a 2 s prompt timeout on every attach.

        `pty`, in place of `argv`: a descriptor of the guest's console pty itself (lab/keeper.py hands one
        out), talked to with no carrier program; this Console closes it."""
        self.host = host
        self._connecting = connected
        self.transcript = transcript
        self.user, self.password, self.password_prompt = user, password, password_prompt
        self.lock = lock
        if lock:
            lock.acquire(lock_timeout, on_wait)  # before the line is taken: never from under another
        self.on_wait = on_wait
        # Raw console bytes, redacted line by line as they come (the control channel carries SA keys).
        self._raw = redact.RedactingLog(private.open_file(raw_log, "ab")) if raw_log else None
        self._child: pexpect.spawn | fdpexpect.fdspawn
        if pty is not None:
            # What the guest wrote while nobody read sat in the pty (the keeper holds it open): not ours.
            termios.tcflush(pty, termios.TCIFLUSH)
            self._child = fdpexpect.fdspawn(pty, timeout=COMMAND, maxread=65536)
        else:
            assert argv, "a console needs a carrier program or a pty"
            self._child = pexpect.spawn(argv[0], argv[1:], timeout=COMMAND, maxread=65536, echo=False)
        self._child.delaybeforesend = None  # we frame commands; no need to pace them
        if self._raw:
            self._child.logfile_read = self._raw
        self._serial = 0
        self._synced = False  # our sync line came back: the shell is in the known state

    # --- getting a shell ------------------------------------------------------------------------------
    def _connect(self, timeout: float) -> None:
        """Once per console: wait until the console program is connected (see __init__)."""
        if self._connecting is not None:
            pattern, self._connecting = self._connecting, None
            self.wait_for(pattern, timeout, "connection of the console program")

    def wait_for(self, pattern: str, timeout: float, what: str) -> str:
        """Wait for a regex on the console; return what came before it."""
        self._connect(timeout)
        try:
            self._child.expect(pattern, timeout=timeout)
        except pexpect.TIMEOUT:
            raise ConsoleTimeout(self.host, what, timeout, self._tail(), self.transcript_path()) from None
        except pexpect.EOF:
            raise ConsoleError(
                f"{self.host}: the console closed while waiting for {what}"
                f" (last output: {self._last_lines()})"
            ) from None
        return self._text(self._child.before)

    def attach(
        self, timeout: float = LOGIN, *, resumed: bool = False, with_sync: Callable[[], str] | None = None
    ) -> None:
        """From whatever state the console is in (login prompt, shell) to a shell in a known state.

        `resumed`: a guest restored from a snapshot, whose shell was left in the known state when it was
        saved. Then, and on a console this object already synced, one sync round trip proves the shell
        without the prompt dialogue; anything else on the line falls back to the full dialogue.
        `with_sync`: a command that rides on the sync line (no round trip of its own), made as the line is
        sent; it must print nothing (what it prints is dropped with the line's echo)."""
        self._connect(timeout)
        if resumed or self._synced:
            quick = min(RESUMED_SYNC, timeout)
            try:
                self._known_state(quick, at_least=quick, settled=True, with_sync=with_sync)
                return
            except ConsoleTimeout:
                pass
        deadline = time.monotonic() + timeout
        patterns = [r"[Ll]ogin: ?$|[Ll]ogin: ", self.password_prompt, _PROMPT]
        interrupted = False
        while True:
            self._child.send("\r")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConsoleTimeout(
                    self.host,
                    f"shell prompt ({self._busy_with()})",
                    timeout,
                    self._tail(),
                    self.transcript_path(),
                )
            try:
                which = self._child.expect(patterns, timeout=min(2.0, remaining))
            except pexpect.TIMEOUT:
                # A shell we left earlier has no prompt and no echo: it answers the sync line all the same.
                try:
                    self._known_state(min(3.0, max(0.5, deadline - time.monotonic())), with_sync=with_sync)
                    return
                except ConsoleTimeout:
                    if not interrupted:
                        # Something holds the line (a command left by a killed ikedlab): say so at
                        # once, then interrupt it: the control channel is ours alone.
                        interrupted = True
                        if self.on_wait:
                            self.on_wait(
                                f"{self.host}: the control console has no prompt ({self._busy_with()}); "
                                "interrupting it"
                            )
                        self._interrupt()
                    continue
            except pexpect.EOF:
                raise ConsoleError(
                    f"{self.host}: the console closed before a shell prompt"
                    f" (last output: {self._last_lines()})"
                ) from None
            if which == 0:
                if self.user is None:
                    raise ConsoleError(f"{self.host}: the console asks for a login but none is configured")
                self._child.send(self.user + "\r")
                continue
            if which == 1:
                self._child.send((self.password or "") + "\r")
                continue
            break
        self._known_state(deadline - time.monotonic(), with_sync=with_sync)

    def _known_state(
        self,
        timeout: float,
        at_least: float = 5.0,
        settled: bool = False,
        with_sync: Callable[[], str] | None = None,
    ) -> None:
        # No echo, no job-control chatter, C locale: only our frames carry output. A bare prompt (outside
        # the frames, so never read as output) lets the next process's attach see this shell on its first
        # Enter; without one it waited out a 2 s timeout. `settled`: the shell was put so before (a restored
        # guest's): only the sync, with no program to start.
        token = secrets.token_hex(4)
        shell = f"stty -echo 2>/dev/null; PS1='{SHELL_PROMPT}'; PS2=''; export LC_ALL=C; set +m 2>/dev/null; "
        setup = "" if settled else shell
        extra = f"{with_sync()}; " if with_sync else ""
        self._child.send(f"{setup}{extra}printf '%s%s\\n' '@@IKL' 'SYNC{token}@@'\r")
        self._synced = False
        self.wait_for(re.escape(f"@@IKLSYNC{token}@@"), max(timeout, at_least), "shell after login")
        self._synced = True

    # --- commands --------------------------------------------------------------------------------------
    def run(
        self,
        command: str,
        *,
        timeout: float = COMMAND,
        stdin: str | None = None,
        on_output: Callable[[str], object] | None = None,
    ) -> Result:
        """Run one shell command; return its exit status and output (stdout and stderr together).

        `on_output` gets the output as it comes (for `exec`). Ctrl-C here interrupts the guest's command
        too, and the shell is resynchronised before KeyboardInterrupt goes on.
        """
        line, begin, end = self._framed(command, stdin)
        if self.lock:
            self.lock.running(command)
        try:
            self._child.send(line.replace("\n", "\r") + "\r")
            started = min(timeout, COMMAND)  # a stream runs for ever, but must start in time
            self.wait_for(re.escape(begin) + r"\r*\n", started, f"start of `{short(command)}`")
            output, status = self._read_until_end(end, timeout, command, on_output)
        except KeyboardInterrupt:
            self._recover()
            if self.transcript:
                self.transcript.record(self.host, command, "(interrupted)\n", None)
            raise
        finally:
            if self.lock:
                self.lock.running(None)
        if self.transcript:
            self.transcript.record(self.host, command, output, status)
        return Result(command, status, output)

    def _framed(self, command: str, stdin: str | None = None) -> tuple[str, str, str]:
        """The line that runs `command` between a begin marker and an end marker carrying its exit status;
        returns (line, begin, end)."""
        self._serial += 1
        tag = f"{secrets.token_hex(3)}{self._serial}"
        begin, end = f"@@IKLB{tag}@@", f"@@IKLE{tag}"
        start = f"printf '%s%s\\n' '@@IKL' 'B{tag}@@'; {{ {command}\n}}"
        finish = f"printf '@@IKLE%s %d@@\\n' '{tag}' $?"
        if stdin is None:
            return f"{start} </dev/null 2>&1; {finish}", begin, end
        # The heredoc's body starts on the line after the one that opens it, and ends the whole line.
        eof = f"IKEDLAB_EOF_{tag}"
        if any(line == eof for line in stdin.splitlines()):
            raise ConsoleError(f"{self.host}: input contains the heredoc delimiter")
        text = stdin if stdin.endswith("\n") or not stdin else stdin + "\n"
        return f"{start} 2>&1 <<'{eof}'; {finish}\n{text}{eof}", begin, end

    def _read_until_end(
        self, end: str, timeout: float, command: str, on_output: Callable[[str], object] | None
    ) -> tuple[str, int]:
        """Read a command's output up to its end marker; hand it to `on_output` as it arrives."""
        end_re = re.compile(re.escape(end.encode()) + rb" (\d+)@@\r*\n?")
        pending = bytes(self._child.buffer)
        self._child.buffer = b""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chunks: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            if m := end_re.search(pending):
                self._child.buffer = pending[m.end() :]
                text = self._text(decoder.decode(pending[: m.start()], final=True))
                chunks.append(text)
                if on_output and text:
                    on_output(text)
                return "".join(chunks), int(m.group(1))
            if (safe := _before_partial(pending, end.encode())) > 0:
                text = self._text(decoder.decode(pending[:safe]))
                pending = pending[safe:]
                chunks.append(text)
                if on_output and text:
                    on_output(text)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = "".join(chunks) + self._text(pending)
                if self.transcript:
                    self.transcript.record(self.host, command, tail + "\n(timed out)\n", None)
                self._recover()
                raise ConsoleTimeout(
                    self.host, f"end of `{short(command)}`", timeout, tail, self.transcript_path()
                )
            try:
                pending += self._child.read_nonblocking(65536, timeout=min(0.5, remaining))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise ConsoleError(f"{self.host}: the console closed during `{short(command)}`") from None

    def check(self, command: str, *, timeout: float = COMMAND, stdin: str | None = None) -> Result:
        """Run a command that must succeed."""
        result = self.run(command, timeout=timeout, stdin=stdin)
        if not result.ok:
            raise CommandError(self.host, command, result.status, result.output, self.transcript_path())
        return result

    def stream(self, command: str, out: Callable[[str], object]) -> Result:
        """Run a command that goes on until stopped (a daemon in the foreground), handing its output to `out`
        as it arrives. Ctrl-C here (KeyboardInterrupt) interrupts it in the guest; the call returns once the
        shell is in step again, with what was seen and status 130."""
        seen: list[str] = []

        def collect(text: str) -> None:
            seen.append(text)
            out(text)

        try:
            return self.run(command, timeout=math.inf, on_output=collect)
        except KeyboardInterrupt:
            return Result(command, 130, "".join(seen))

    def send_line(self, line: str) -> None:
        """Type a line as a person would, unframed (e.g. `exit`); follow with wait_for() or attach()."""
        self._child.send(line + "\r")

    def _interrupt(self) -> None:
        """Ctrl-C to the guest: the byte passes a raw carrier (virsh) or pty unchanged, and the guest's tty
        makes it SIGINT for the command in the foreground."""
        self._child.send("\x03")

    def _recover(self) -> None:
        """After a timeout: interrupt the command and resynchronise, so the next command starts clean."""
        try:
            self._interrupt()
            self._known_state(10.0)
        except (ConsoleError, OSError):
            pass  # the caller is already being told about the timeout

    def close(self) -> None:
        if isinstance(self._child, pexpect.spawn):
            self._end_carrier()
        else:
            self._child.close()  # the pty itself stays held by the keeper: the guest sees nothing
        if self._raw:
            self._raw.close()
            self._raw = None
        if self.lock:
            self.lock.release()

    def _end_carrier(self) -> None:
        assert isinstance(self._child, pexpect.spawn)
        if self._child.isalive():
            # The carrier goes first: a thread still reading this console gets EOF at once, not a timeout.
            # SIGKILL straight away: virsh console ignores SIGHUP and SIGINT, and pexpect's polite sequence
            # waited 0.1 s after each signal before it got there.
            try:
                self._child.kill(signal.SIGKILL)
                self._child.wait()
            except (OSError, pexpect.ExceptionPexpect):
                pass  # already gone (another thread saw it end)
            self._child.ptyproc.delayafterclose = 0  # reaped: nothing for the kernel to catch up on
        self._child.close(force=True)

    # --- helpers ---------------------------------------------------------------------------------------
    def _text(self, data: object) -> str:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data or "")
        return text.replace("\r\n", "\n").replace("\r", "")

    def _last_lines(self) -> str:
        """The console's last few lines on one line, for a message: never a raw multi-line tail."""
        return " | ".join(line.strip() for line in self._tail().strip().splitlines()[-3:]) or "nothing"

    def _tail(self) -> str:
        buffered = self._child.before if isinstance(self._child.before, bytes) else b""
        return self._text(buffered + (self._child.buffer or b""))[-400:]

    def _busy_with(self) -> str:
        if self.lock and self.lock.left_running:
            return f"`{self.lock.left_running}` may still run there, left by a process that was stopped"
        return "a command may still run there"

    def transcript_path(self) -> Path | None:
        return self.transcript.path(self.host) if self.transcript else None


def _before_partial(data: bytes, marker: bytes) -> int:
    """How much of `data` is surely output: all but a started end marker or a CR that may precede LF."""
    if (at := data.find(marker)) >= 0:
        return at
    for k in range(min(len(marker) - 1, len(data)), 0, -1):
        if data.endswith(marker[:k]):
            return len(data) - k
    return len(data) - 1 if data.endswith(b"\r") else len(data)
