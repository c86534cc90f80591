"""What a host reports, as typed values. Parsers in the platform modules turn command output into these."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    rtt_min_ms: float | None = None  # round trip, when any reply came
    rtt_avg_ms: float | None = None

    @property
    def loss(self) -> int:
        return self.transmitted - self.received


@dataclass(frozen=True)
class IpsecCounters:
    """Packets (and bytes) of ESP and AH through this host, as `netstat -s -p esp|ah` counts them."""

    esp_in: int
    esp_out: int
    ah_in: int
    ah_out: int
    esp_in_bytes: int = 0
    esp_out_bytes: int = 0


@dataclass(frozen=True)
class Flow:
    """An IPsec flow (policy): traffic from src to dst goes through the tunnel to/from peer."""

    direction: str  # "in" or "out" (Linux's "fwd" is reported as "in")
    src: ipaddress.IPv4Network
    dst: ipaddress.IPv4Network
    peer: str | None = None


@dataclass(frozen=True)
class ChildSa:
    spi: int
    protocol: str  # "esp" or "ah"
    direction: str  # "in" or "out"
    src: str = ""  # outer addresses
    dst: str = ""


@dataclass(frozen=True)
class IkeSa:
    local: str  # address[:port]
    peer: str
    state: str  # "ESTABLISHED", "SA_INIT", ...
    peer_id: str = ""  # e.g. "FQDN/resp.example.com"
    initiator: bool = False
    natt: bool = False
    spi: str = ""  # "ispi:rspi": a new pair after the IKE SA is rekeyed


@dataclass(frozen=True)
class SaState:
    ike_sas: tuple[IkeSa, ...] = ()
    child_sas: tuple[ChildSa, ...] = ()
    flows: tuple[Flow, ...] = ()

    @property
    def established(self) -> bool:
        """An ESTABLISHED IKE SA with a child SA in each direction."""
        directions = {c.direction for c in self.child_sas}
        return any(s.state == "ESTABLISHED" for s in self.ike_sas) and {"in", "out"} <= directions

    def describe(self) -> str:
        """In words, for messages: "IKE SA SA_INIT with 198.51.100.1, no child SAs"."""
        if not self.ike_sas:
            return "no IKE SA"
        ike = "; ".join(f"IKE SA {s.state} with {s.peer.split(':')[0]}" for s in self.ike_sas)
        directions = sorted({c.direction for c in self.child_sas})
        child = f"child SAs {' and '.join(directions)}" if directions else "no child SAs"
        return f"{ike}, {child}"


@dataclass(frozen=True)
class Packet:
    """One line of a packet capture."""

    src: str
    dst: str
    summary: str  # e.g. "ICMP echo request, id 1, seq 1, length 64"
    spi: int | None = None  # enc0 shows the SA the packet came through
    protocol: str = ""  # "ICMP", "UDP", "ESP" (also ESP inside UDP: see ports), "IKE", ...
    raw: str = ""
    src_port: int | None = None
    dst_port: int | None = None

    @property
    def udp_encapsulated(self) -> bool:
        """ESP inside UDP (NAT traversal) rather than bare ESP (IP protocol 50)."""
        return self.protocol == "ESP" and self.dst_port is not None


@dataclass(frozen=True)
class Capture:
    packets: tuple[Packet, ...] = ()
    text: str = ""
    pcap: str | None = None  # host-side path of the saved pcap
    notes: list[str] = field(default_factory=list)
