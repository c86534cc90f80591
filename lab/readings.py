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


@dataclass(frozen=True)
class KernelSa:
    """One SA in the kernel's SAD (`ipsecctl -sa` on OpenBSD, `ip xfrm state` on Linux), keys left out."""

    protocol: str  # "esp", "ah", "ipcomp", "ipip" (Linux's helper state under an IPComp tunnel)
    mode: str  # "tunnel" or "transport"
    src: str  # outer addresses
    dst: str
    spi: int
    enc: str = ""  # iked.conf's names: aes-256, aes-128-gcm, ...
    auth: str = ""  # hmac-sha2-384, ...
    comp: str = ""  # deflate, ...
    encap: str = ""  # UDP encapsulation, "espinudp 4500 4500" (source and destination port); "" for none
    larval: bool = False  # reserved (an SPI handed out, or an acquire) but never given keys

    def describe(self) -> str:
        extra = [f"{k} {v}" for k, v in (("enc", self.enc), ("auth", self.auth), ("comp", self.comp)) if v]
        extra += [f"encap {self.encap}"] if self.encap else []
        extra += ["larval: no keys"] if self.larval else []
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"{self.protocol} {self.mode} {self.src} -> {self.dst} spi 0x{self.spi:08x}{tail}"

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        """What tells two SAs apart (a leftover is an SA whose key the baseline lacks)."""
        return (self.protocol, self.mode, self.src, self.dst, self.spi)


@dataclass(frozen=True)
class KernelPolicy:
    """One flow in the kernel's SPD: traffic from src to dst (networks) in a direction goes through an SA
    of `protocol` in `mode` to or from `peer`. Per-socket policies (a daemon's own bypass) are not flows."""

    direction: str  # "in", "out", or Linux's "fwd" (forwarded traffic, inbound)
    src: str  # a network, "192.0.2.1/32", "2001:db8:1::/64"
    dst: str
    protocol: str = ""  # the SA protocol its template asks for: "esp", "ah", "ipcomp"; "" for none
    mode: str = ""
    peer: str = ""  # the tunnel's far end
    srcid: str = ""  # OpenBSD's flows carry the ids; Linux's do not
    dstid: str = ""
    action: str = ""  # "require", "use", "deny", "bypass" where the kernel says (OpenBSD's type)
    upper: str = ""  # an upper-layer selector ("icmp", "udp 500") when not every protocol

    def describe(self) -> str:
        peer = f" peer {self.peer}" if self.peer else ""
        proto = f"{self.protocol} " if self.protocol else ""
        mode = f" {self.mode}" if self.mode else ""
        upper = f" proto {self.upper}" if self.upper else ""
        return f"flow {proto}{self.direction} from {self.src} to {self.dst}{upper}{peer}{mode}"

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.direction, self.src, self.dst, self.protocol, self.upper)


@dataclass(frozen=True)
class KernelState:
    """The kernel's IPsec state on a host: its SAs and its flows."""

    sas: tuple[KernelSa, ...] = ()
    policies: tuple[KernelPolicy, ...] = ()

    def beyond(self, baseline: KernelState) -> KernelState:
        """What this state holds that `baseline` did not (a case's leftovers)."""
        sas = {s.key for s in baseline.sas}
        policies = {p.key for p in baseline.policies}
        return KernelState(
            tuple(s for s in self.sas if s.key not in sas),
            tuple(p for p in self.policies if p.key not in policies),
        )

    @property
    def empty(self) -> bool:
        return not self.sas and not self.policies

    def describe(self) -> str:
        if self.empty:
            return "no SA and no flow"
        return "; ".join([*(s.describe() for s in self.sas), *(p.describe() for p in self.policies)])
