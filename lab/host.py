"""A live guest as tests and provisioning see it: a console to run commands, a platform to speak its dialect.

Scenarios talk to a Host and never to a dialect: `initlan.ping("10.0.2.2")`, `init.ipsec_counters()`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from lab.console import Console, Result
from lab.errors import CommandError, ConsoleError, ConsoleTimeout, ProvisionError
from lab.platforms import Action, FileSpec, Platform
from lab.platforms.parsers import iked_fatal_line
from lab.readings import Capture, IpsecCounters, PingResult, SaState
from lab.settings import CAPTURE, COMMAND, IKED_START, PING_SLACK
from lab.topology import Host as HostSpec

T = TypeVar("T")
FATAL_LOG_INTERVAL = 2.0  # seconds between reads of iked's log while waiting for the tunnel


def _last_reading(value: object) -> str:
    """The last reading, in words, for a timeout's message ("" when a yes/no says nothing more)."""
    if isinstance(value, bool) or value is None:
        return ""
    describe = getattr(value, "describe", None)
    return f" (last reading: {describe() if callable(describe) else value})"


class Host:
    def __init__(self, spec: HostSpec, platform: Platform, console: Console, artifacts: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.platform = platform
        self.console = console
        self.artifacts = artifacts  # where captures and logs fetched from this host land
        self.ike_log_mark = 0  # lines of iked's log written before iked last started (see mark_ike_log)

    def __repr__(self) -> str:
        return f"<Host {self.name} ({self.platform.name})>"

    def interface(self, link: str) -> str:
        """This host's interface name on a link of the topology (eth1, vio1, ...)."""
        return self.platform.interface_name(self.spec.interface_on(link).index)

    # --- commands ------------------------------------------------------------------------------------------
    def prove_restored(self) -> None:
        """A guest just restored from a snapshot: its shell proven by one sync line, which also sets its
        clock and reseeds its kernel's RNG from the host (`Platform.restored_command`): a restored guest
        resumes the clock of its save, and the RNG state every other copy of that save resumes too."""
        self.console.attach(resumed=True, with_sync=self.platform.restored_command)

    def run(self, command: str, *, timeout: float = COMMAND) -> Result:
        return self.console.run(command, timeout=timeout)

    def check(self, command: str, *, timeout: float = COMMAND) -> Result:
        return self.console.check(command, timeout=timeout)

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, FileSpec):
                self.write_file(action.path, action.content, action.mode)
            else:
                self.check(action)

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a file in the guest, byte for byte, and prove it arrived intact (the serial line is no
        checksum). The body travels as base64 and the guest decodes it: typed as it is, a control byte in
        it (Ctrl-C, Ctrl-D, a carriage return, in an iked.conf comment) is acted on by the guest's tty."""
        data = content.encode()
        directory = shlex.quote(path.rsplit("/", 1)[0] or "/")
        target = shlex.quote(path)  # paths carry topology values (a peer's srcid names its key file)
        # One round trip: write, set the mode, and print the checksum of what landed.
        written = self.console.check(
            f"mkdir -p {directory} && (umask 077 && {self.platform.facts.base64_decode} > {target}) && "
            f"chmod {mode:o} {target} && {self.platform.checksum_command(path)}",
            stdin=base64_lines(data),
        )
        got = self.platform.parse_checksum(written.output)
        want = hashlib.sha256(data).hexdigest()
        if got != want:
            raise ProvisionError(
                f"{self.name}: {path} arrived corrupted over the console (sha256 {got} != {want})"
            )

    def read_file(self, path: str) -> str:
        return self.check(f"cat {shlex.quote(path)}").output

    def fetch_binary(self, path: str, dest: Path) -> Path:
        """Copy a (small) binary file out of the guest, base64 over the console."""
        out = self.check(f"openssl base64 -in {shlex.quote(path)}").output
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(base64.b64decode("".join(out.split())))
        return dest

    # --- what the guide checks -----------------------------------------------------------------------------
    def ping(self, address: str, count: int = 3, timeout_s: int = 2) -> PingResult:
        result = self.run(
            self.platform.ping_command(address, count, timeout_s), timeout=count * timeout_s + PING_SLACK
        )
        return self.platform.parse_ping(result.output)

    def sas(self) -> SaState:
        return self.platform.parse_sa(self.check(self.platform.sa_command()).output)

    def ipsec_counters(self) -> IpsecCounters:
        return self.platform.parse_counters(self.check(self.platform.counters_command(self.spec)).output)

    def iked_log(self, since_line: int = 0) -> str:
        """iked's log; from line `since_line` on (0: all of it)."""
        p = self.platform
        return self.run(p.ike_log_since_command(since_line) if since_line else p.ike_log_command()).output

    def evidence_commands(self) -> dict[str, str]:
        """What a human needs from this host to tell why a tunnel failed: file name -> command (failed
        `up`, scenario evidence, bug bundles)."""
        p = self.platform
        commands = {"versions.txt": p.versions_command()}
        if self.spec.ipsec:
            commands |= {
                "iked.log": p.ike_log_command(),
                "ikectl-show-sa.txt": p.sa_command(),
                "kernel-ipsec.txt": p.kernel_ipsec_command(),
                "counters.txt": p.counters_command(self.spec),
            }
        return commands

    def mark_ike_log(self) -> None:
        """Remember where iked's log ends now: what iked says after its next start is read from here."""
        counted = self.run(self.platform.ike_log_length_command()).output.split()
        self.ike_log_mark = int(counted[0]) if counted and counted[0].isdigit() else 0

    def wait_until(
        self,
        what: str,
        probe: Callable[[], T],
        ok: Callable[[T], bool],
        timeout: float,
        interval: float = 0.5,
        stop: threading.Event | None = None,
    ) -> T:
        """Poll `probe` until `ok(value)`, or fail after `timeout` saying what did not happen.

        With `stop`, return the last reading early once it is set (another host's wait already failed).
        """
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if ok(value) or (stop is not None and stop.is_set()):
                return value
            if time.monotonic() >= deadline:
                raise ProvisionError(
                    f"{self.name}: {what} did not happen within {timeout:g}s{_last_reading(value)}",
                    f"transcript: {self.console.transcript_path() or '-'}",
                )
            time.sleep(interval)  # the pace of polling, not a guess at how long something takes

    def wait_ike_started(self, timeout: float = IKED_START) -> None:
        """Wait until iked answers a query of its SAs: its IKE process answers only from its event loop,
        which it enters after registering with the kernel's key engine. On Linux that registration (PF_KEY
        SADB_REGISTER) makes the kernel look up every IPsec algorithm: 35-80 s under emulation while each
        missing one ran modprobe, seconds since the gateways' kernel is made ready first
        (Linux.kernel_ipsec_actions); the rest of start-up (configuration already queued) takes ms."""
        deadline = time.monotonic() + timeout
        command = self.platform.sa_command()

        def answers() -> bool:
            # The query waits while iked's IKE process is busy starting: give it the time that is left.
            remaining = max(1.0, deadline - time.monotonic())
            try:
                return self.run(command, timeout=remaining).ok
            except ConsoleTimeout:
                return False

        self.wait_until(f"iked answering `{command}` (past its start-up)", answers, bool, timeout)

    def wait_established(self, timeout: float, stop: threading.Event | None = None) -> SaState:
        """Wait for the tunnel; fail at once when iked's log (since it last started) says it gave up."""

        log_read = 0.0  # when iked's log was last read: every few seconds, not at every poll, since
        # each read is processes in a guest whose CPU iked needs under software emulation
        deadline = time.monotonic() + timeout

        def reading() -> SaState:
            nonlocal log_read
            # Fails while iked opens its control socket, and waits while its IKE process is still starting
            # (see wait_ike_started): give that query the time that is left, not one command's.
            result = self.run(self.platform.sa_command(), timeout=max(COMMAND, deadline - time.monotonic()))
            state = self.platform.parse_sa(result.output) if result.ok else SaState()
            if not state.established and time.monotonic() - log_read >= FATAL_LOG_INTERVAL:
                log_read = time.monotonic()
                log = self.iked_log(self.ike_log_mark)
                if line := iked_fatal_line(log, self.platform.fatal_log_pattern()):
                    raise ProvisionError(f"{self.name}: iked gave up on the tunnel: {line}")
            return state

        return self.wait_until(
            "an ESTABLISHED IKE SA with child SAs", reading, lambda s: s.established, timeout, stop=stop
        )

    @contextmanager
    def capture_decapsulated(self, bpf: str = "") -> Iterator[list[Capture]]:
        """Plaintext as it enters and leaves the tunnel (OpenBSD's enc0). Yields a list that holds the
        Capture once the block ends."""
        with self._capture("decapsulated", None, bpf) as box:
            yield box

    @contextmanager
    def capture_wire(self, iface: str, bpf: str = "") -> Iterator[list[Capture]]:
        """What crosses one interface, e.g. `capture_wire(host.platform.interface_name(0))`."""
        with self._capture("wire", iface, bpf) as box:
            yield box

    @contextmanager
    def _capture(self, kind: str, iface: str | None, bpf: str) -> Iterator[list[Capture]]:
        tag = secrets.token_hex(3)
        pcap = f"/tmp/ikedlab-{kind}-{tag}.pcap"
        pid = int(self.check(self.platform.capture_start_command(kind, pcap, iface, bpf)).output.split()[-1])
        # tcpdump creates the file once it listens: wait for that, not for a guessed delay.
        started = f"test -e {shlex.quote(pcap)}"
        self.wait_until(f"{kind} capture started", lambda: self.run(started).ok, bool, CAPTURE, 0.1)
        box: list[Capture] = []
        try:
            yield box
        finally:
            self.run(self.platform.capture_stop_command(pid), timeout=CAPTURE)
        text = self.run(self.platform.capture_read_command(pcap)).output
        local = self.artifacts / f"{self.name}-{kind}{'-' + iface if iface else ''}-{tag}.pcap"
        saved: str | None = str(local)
        try:
            self.fetch_binary(pcap, local)
        except (CommandError, ConsoleError, ValueError):
            saved = None  # the text is what the test reads; the pcap is evidence for humans
        box.append(dataclasses.replace(self.platform.parse_capture(text, kind), pcap=saved))


#: base64 line length for files sent to guests: OpenBSD's b64decode -r decodes line by line (b64_pton on each,
#: usr.bin/uudecode/uudecode.c), so each line is whole 4-character groups, well under its 1024-byte buffer.
BASE64_LINE = 64


def base64_lines(data: bytes) -> str:
    """`data` in base64, BASE64_LINE characters a line: only [A-Za-z0-9+/=] and newlines reach a tty."""
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + BASE64_LINE] + "\n" for i in range(0, len(text), BASE64_LINE))
