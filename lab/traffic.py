"""Traffic across the tunnel and forced rekeying, for bug reproducers and scenarios.

Traffic is a stream of ICMP echo requests of a chosen size and pace from one host to another: every packet
is counted both ways, so loss is exact (TCP would hide it by retransmitting), and a byte budget is simply a
number of packets. `--bytes N` sends ceil(N / packet) packets; `--seconds S` sends for S seconds.

iked has no command that rekeys an SA on demand (`ikectl reset sa` deletes SAs, it does not rekey them), so
a rekey is forced the way iked.conf allows: short lifetimes (`ikelifetime`, `lifetime … bytes …`) on both
gateways, iked restarted, and a wait until the SPIs change — the child SAs' (and the IKE SA's when asked).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab import gate
from lab.errors import LabError
from lab.host import Host
from lab.ownership import ikedlab_for
from lab.readings import SaState
from lab.render import Lifetimes

if TYPE_CHECKING:
    from lab.lab import Lab

IP_ICMP_HEADERS = 28  # an echo request's IP (20) and ICMP (8) headers, on top of its payload
DEFAULT_SIZE = 1000
DEFAULT_INTERVAL = 0.02  # 50 packets a second: steady under software emulation
REPLY_WAIT = 2  # seconds a lost reply is waited for
MIN_LIFETIME = 10  # seconds: shorter SA lifetimes would rekey faster than IKE completes under emulation
REKEY_SLACK = 60.0  # on top of twice the lifetime: the restart, the exchange, a busy machine


@dataclass(frozen=True)
class TrafficResult:
    source: str
    destination: str
    transmitted: int
    received: int
    packet_bytes: int  # per packet, on the wire inside the tunnel (IP + ICMP + payload)
    seconds: float

    @property
    def lost(self) -> int:
        return self.transmitted - self.received

    @property
    def bytes_sent(self) -> int:
        return self.transmitted * self.packet_bytes

    def summary(self) -> str:
        return (
            f"{self.source} -> {self.destination}: {self.transmitted} packets of {self.packet_bytes} bytes "
            f"({self.bytes_sent} bytes) in {self.seconds:.1f}s, {self.received} answered, {self.lost} lost"
        )


MAX_SECONDS = 24 * 3600  # a day of echo requests at 50 a second: more is a mistake, not a test


def packets_for(*, nbytes: int | None, seconds: float | None, size: int, interval: float) -> int:
    if (nbytes is None) == (seconds is None):
        raise LabError("traffic: give either --bytes or --seconds")
    if nbytes is not None:
        if nbytes <= 0:
            raise LabError(f"--bytes {nbytes}: a positive number of bytes")
        return math.ceil(nbytes / (size + IP_ICMP_HEADERS))
    assert seconds is not None
    if not 0 < seconds <= MAX_SECONDS:  # also nan; inf made round() raise OverflowError
        raise LabError(f"--seconds {seconds:g}: a positive duration of at most {MAX_SECONDS} s")
    return max(1, round(seconds / interval))


def send(
    source: Host,
    destination: str,
    *,
    nbytes: int | None = None,
    seconds: float | None = None,
    size: int = DEFAULT_SIZE,
    interval: float = DEFAULT_INTERVAL,
) -> TrafficResult:
    """Send echo requests from `source` to the address `destination`; count what came back."""
    if not 0 <= size <= 65000:
        raise LabError(f"--size {size}: from 0 to 65000 bytes")
    count = packets_for(nbytes=nbytes, seconds=seconds, size=size, interval=interval)
    command = source.platform.ping_command(destination, count, REPLY_WAIT, interval=interval, size=size)
    started = time.monotonic()
    # Under emulation the guest may pace slower than asked: allow it three times the nominal duration.
    result = source.run(command, timeout=count * interval * 3 + REPLY_WAIT + 60)
    ping = source.platform.parse_ping(result.output)
    return TrafficResult(
        source.name,
        destination,
        ping.transmitted,
        ping.received,
        size + IP_ICMP_HEADERS,
        time.monotonic() - started,
    )


@dataclass(frozen=True)
class Keys:
    """What identifies a gateway's keys at one moment: its IKE SAs' SPI pairs and child SAs' SPIs."""

    ike: frozenset[str]
    child: frozenset[int]

    @staticmethod
    def of(state: SaState) -> Keys:
        return Keys(
            frozenset(s.spi for s in state.ike_sas if s.state == "ESTABLISHED"),
            frozenset(c.spi for c in state.child_sas),
        )


def keys(gateway: Host) -> Keys:
    return Keys.of(gateway.sas())


def wait_for_rekey(gateway: Host, before: Keys, *, ike: bool, timeout: float) -> Keys:
    """Wait until `gateway` has an established tunnel on keys none of which it had `before`."""

    def rekeyed(state: SaState) -> bool:
        now = Keys.of(state)
        fresh_child = bool(now.child) and not (now.child & before.child)
        fresh_ike = bool(now.ike) and not (now.ike & before.ike)
        return state.established and fresh_child and (fresh_ike or not ike)

    what = "the IKE SA and the child SAs rekeyed" if ike else "the child SAs rekeyed"
    return Keys.of(gateway.wait_until(what, gateway.sas, rekeyed, timeout, interval=1.0))


def short_lifetimes(child_seconds: int, ike_seconds: int = 0, child_bytes: str | None = None) -> Lifetimes:
    """Lifetimes that make iked rekey soon; the IKE SA only when `ike_seconds` is given."""
    if child_seconds < MIN_LIFETIME or (ike_seconds and ike_seconds < MIN_LIFETIME):
        raise LabError(f"SA lifetimes of at least {MIN_LIFETIME}s: iked rekeys a little before they end")
    if child_bytes is not None:
        gate.BYTES.check(child_bytes, "--child-bytes")  # it is written into iked.conf
    return Lifetimes(ike_seconds=ike_seconds, child_seconds=child_seconds, child_bytes=child_bytes)


def rekey(
    lab: Lab, child_seconds: int = 20, ike_seconds: int = 0, child_bytes: str | None = None
) -> dict[str, tuple[Keys, Keys]]:
    """Short lifetimes on both gateways (iked restarted with them), then wait until every gateway has
    rekeyed its child SAs (and its IKE SA when `ike_seconds`). The lifetimes stay short, so iked keeps
    rekeying: `stop_rekeying` puts the normal ones back. Returns each gateway's keys before and after."""
    own = sorted(lab.options.ike_conf)
    if own:
        raise LabError(
            f"{', '.join(own)} run{'s' if len(own) == 1 else ''} your own iked.conf: ikedlab cannot shorten "
            "its lifetimes",
            "add `ikelifetime`/`lifetime` to the policy and "
            f"`{ikedlab_for(lab.name)} reconfigure GATEWAY --iked-conf FILE`",
        )
    lab.options = dataclasses.replace(
        lab.options, lifetimes=short_lifetimes(child_seconds, ike_seconds, child_bytes)
    )
    lab.restore()
    gateways = lab.gateways()
    before = {h.name: keys(h) for h in gateways}
    deadline = time.monotonic() + 2 * max(child_seconds, ike_seconds) + REKEY_SLACK
    after = {
        h.name: wait_for_rekey(
            h, before[h.name], ike=bool(ike_seconds), timeout=max(1.0, deadline - time.monotonic())
        )
        for h in gateways
    }
    return {name: (before[name], after[name]) for name in before}


def stop_rekeying(lab: Lab) -> None:
    lab.options = dataclasses.replace(lab.options, lifetimes=None)
    lab.restore()
