"""One serial console under pexpect: log in, put the shell in a known state, run framed commands.

Every command is sent as one line that prints a begin marker, runs the command, and prints an end marker
carrying its exit status, so output and status are read from the frame, never guessed from prompts. The
markers never appear whole in the text we send (the begin marker is printed from two halves, `'@@IKL' 'B…'`,
the end marker from a printf format), so an echoed command line can never look like one.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pexpect

from lab.errors import CommandError, ConsoleError, ConsoleTimeout
from lab.settings import COMMAND, LOGIN

_PROMPT = r"[#$] ?$|[#$] "


@dataclass(frozen=True)
class Result:
    command: str
    status: int
    output: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class Transcript:
    """Commands and their output, one file per host plus one merged file for the lab: `[host +1.2s] # cmd`."""

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
        entry = (
            f"{host}# {command}\n{output}{'' if output.endswith(chr(10)) or not output else chr(10)}{tail}"
        )
        with self._lock:
            if host not in self._files:
                self._files[host] = self.path(host).open("a", encoding="utf-8")
                self._files["*"] = self._files.get("*") or (self.directory / "all.log").open(
                    "a", encoding="utf-8"
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
    """A shell on a guest's serial console. Wraps pexpect.spawn (the process that carries the console)."""

    def __init__(
        self,
        host: str,
        argv: list[str],
        *,
        transcript: Transcript | None = None,
        raw_log: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        password_prompt: str = r"[Pp]assword:",
    ) -> None:
        self.host = host
        self.transcript = transcript
        self.user, self.password, self.password_prompt = user, password, password_prompt
        self._raw = raw_log.open("ab") if raw_log else None
        self._child = pexpect.spawn(argv[0], argv[1:], timeout=COMMAND, maxread=65536, echo=False)
        self._child.delaybeforesend = None  # we frame commands; no need to pace them
        if self._raw:
            self._child.logfile_read = self._raw
        self._serial = 0
        self._in_known_state = False

    # --- getting a shell ------------------------------------------------------------------------------
    def wait_for(self, pattern: str, timeout: float, what: str) -> str:
        """Wait for a regex on the console; return what came before it."""
        try:
            self._child.expect(pattern, timeout=timeout)
        except pexpect.TIMEOUT:
            raise ConsoleTimeout(self.host, what, timeout, self._tail(), self.transcript_path()) from None
        except pexpect.EOF:
            raise ConsoleError(
                f"{self.host}: the console closed while waiting for {what}: {self._tail()}"
            ) from None
        return self._text(self._child.before)

    def attach(self, timeout: float = LOGIN) -> None:
        """From whatever state the console is in (login prompt, shell) to a shell in a known state."""
        deadline = time.monotonic() + timeout
        patterns = [r"[Ll]ogin: ?$|[Ll]ogin: ", self.password_prompt, _PROMPT]
        while True:
            self._child.send("\r")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConsoleTimeout(self.host, "shell prompt", timeout, self._tail(), self.transcript_path())
            try:
                which = self._child.expect(patterns, timeout=min(2.0, remaining))
            except pexpect.TIMEOUT:
                # A shell we left earlier has no prompt and no echo: it answers the sync line all the same.
                try:
                    self._known_state(min(3.0, max(0.5, deadline - time.monotonic())))
                    return
                except ConsoleTimeout:
                    continue
            except pexpect.EOF:
                raise ConsoleError(
                    f"{self.host}: the console closed before a shell prompt: {self._tail()}"
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
        self._known_state(deadline - time.monotonic())

    def _known_state(self, timeout: float) -> None:
        # No echo, no prompts, no job-control chatter, C locale: only our frames carry output.
        token = secrets.token_hex(4)
        self._child.send(
            "stty -echo 2>/dev/null; PS1=''; PS2=''; export LC_ALL=C; set +m 2>/dev/null; "
            f"printf '%s%s\\n' '@@IKL' 'SYNC{token}@@'\r"
        )
        self.wait_for(re.escape(f"@@IKLSYNC{token}@@"), max(timeout, 5.0), "shell after login")
        self._in_known_state = True

    # --- commands --------------------------------------------------------------------------------------
    def run(self, command: str, *, timeout: float = COMMAND, stdin: str | None = None) -> Result:
        """Run one shell command; return its exit status and output (stdout and stderr together)."""
        line, begin, end = self._framed(command, stdin)
        self._child.send(line.replace("\n", "\r") + "\r")
        self.wait_for(re.escape(begin) + r"\r*\n", timeout, f"start of `{_short(command)}`")
        try:
            self._child.expect(re.escape(end) + r" (\d+)@@", timeout=timeout)
        except pexpect.TIMEOUT:
            tail = self._text(self._child.before)
            if self.transcript:
                self.transcript.record(self.host, command, tail + "\n(timed out)\n", None)
            self._recover()
            raise ConsoleTimeout(
                self.host, f"end of `{_short(command)}`", timeout, tail, self.transcript_path()
            ) from None
        except pexpect.EOF:
            raise ConsoleError(f"{self.host}: the console closed during `{_short(command)}`") from None
        output = self._text(self._child.before)
        status = int(self._child.match.group(1))
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

    def check(self, command: str, *, timeout: float = COMMAND, stdin: str | None = None) -> Result:
        """Run a command that must succeed."""
        result = self.run(command, timeout=timeout, stdin=stdin)
        if not result.ok:
            raise CommandError(self.host, command, result.status, result.output, self.transcript_path())
        return result

    def stream(self, command: str, out: Callable[[str], object]) -> Result:
        """Run a command that goes on until stopped (a daemon in the foreground), handing its output to `out`
        as it arrives. Ctrl-C here (KeyboardInterrupt) interrupts it in the guest; the call returns once it
        has ended there, with its exit status (130 when the shell dropped the rest of the line)."""
        line, begin, end = self._framed(command)
        self._child.send(line.replace("\n", "\r") + "\r")
        self.wait_for(re.escape(begin) + r"\r*\n", COMMAND, f"start of `{_short(command)}`")
        finished = re.compile(re.escape(end) + r" (\d+)@@")
        # What came with the begin marker is in pexpect's buffer, which read_nonblocking() does not look at:
        # take it, and empty that buffer (and pexpect's copy of it for the next `before`).
        pending, seen = self._text(self._child.buffer), ""
        self._child.buffer = self._child.string_type()
        self._child._before = self._child.buffer_type()
        keep = len(end) + 8  # the start of an end marker may be in the last bytes read
        status: int | None = None
        while status is None:
            try:
                try:
                    pending += self._text(self._child.read_nonblocking(4096, timeout=0.5))
                except pexpect.TIMEOUT:
                    pass
                if match := finished.search(pending):
                    pending, status = pending[: match.start()], int(match.group(1))
                elif len(pending) > keep:
                    chunk, pending = pending[:-keep], pending[-keep:]
                    seen += chunk
                    out(chunk)
            except KeyboardInterrupt:
                # An interactive shell may drop the rest of the line (the end marker) with the command:
                # resynchronise, and take the end marker if it came.
                self._child.sendintr()
                self._known_state(COMMAND)
                pending += self._text(self._child.before)
                match = finished.search(pending)
                pending, status = (pending[: match.start()], int(match.group(1))) if match else (pending, 130)
            except pexpect.EOF:
                raise ConsoleError(f"{self.host}: the console closed during `{_short(command)}`") from None
        out(pending)
        seen += pending
        if self.transcript:
            self.transcript.record(self.host, command, seen, status)
        return Result(command, status, seen)

    def send_line(self, line: str) -> None:
        """Type a line as a person would, unframed (e.g. `exit`); follow with wait_for() or attach()."""
        self._child.send(line + "\r")

    def _recover(self) -> None:
        """After a timeout: interrupt the command and resynchronise, so the next command starts clean."""
        try:
            self._child.sendintr()
            self._known_state(10.0)
        except (ConsoleError, OSError):
            pass  # the caller is already being told about the timeout

    def close(self) -> None:
        if self._child.isalive():
            if self._in_known_state:
                # Leave the shell as a person expects it when they attach after us: echo on, a prompt.
                token = secrets.token_hex(4)
                try:
                    friendly = "stty echo 2>/dev/null; PS1='\\h# '; PS2='> '"
                    self._child.send(f"{friendly}; printf '%s%s\\n' '@@IKL' 'BYE{token}@@'\r")
                    self._child.expect(re.escape(f"@@IKLBYE{token}@@"), timeout=3)
                except (OSError, pexpect.TIMEOUT, pexpect.EOF):
                    pass  # best effort: the next attach resynchronises anyway
            self._child.close(force=True)
        if self._raw:
            self._raw.close()
            self._raw = None

    # --- helpers ---------------------------------------------------------------------------------------
    def _text(self, data: object) -> str:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data or "")
        return text.replace("\r\n", "\n").replace("\r", "")

    def _tail(self) -> str:
        buffered = self._child.before if isinstance(self._child.before, bytes) else b""
        return self._text(buffered + (self._child.buffer or b""))[-400:]

    def transcript_path(self) -> Path | None:
        return self.transcript.path(self.host) if self.transcript else None


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= 60 else first[:57] + "..."
