"""Pure parsers for the tools every platform shares: text in, readings out, no I/O.

iked/ikectl, ping and tcpdump print the same shapes on OpenBSD and on Linux (OpenIKED portable), so the
platform modules import these instead of each writing their own. The signatures are a contract: change them
only with every platform module that imports them.

    parse_ikectl_show_sa(text, loaded_only=True) -> SaState      `ikectl show sa` (iked's own format)
    parse_ping_summary(text) -> PingResult                        BSD, busybox and iputils ping summaries
    parse_tcpdump_lines(text) -> tuple[Packet, ...]               `tcpdump -n [-r pcap]`, enc0 included
    parse_netstat_esp_ah(text) -> IpsecCounters                   OpenBSD `netstat -s -p esp; ... -p ah`
    parse_ipsecctl_sa(text, local_addresses=()) -> SaState        OpenBSD `ipsecctl -sa` (the kernel's view)

A parser that finds nothing it can trust raises ParseError (one line, naming what was missing) rather than
returning an empty value that would read as "zero" or "no tunnel".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from lab.errors import ParseError
from lab.readings import (
    ChildSa,
    Flow,
    IkeSa,
    IpsecCounters,
    Packet,
    PingResult,
    SaState,
)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# --- ikectl show sa -----------------------------------------------------------------------------------
#
# iked answers `ikectl show sa` with one line per object (ikev2_info in iked/ikev2.c), the same text on
# OpenBSD and OpenIKED portable:
#   "%s: %p rspi %s ispi %s %s->%s<%s>[%s] %s %c%s%s nexti %p pol %p"      IKE SA
#   "%s: %p %s %s %s %s -> %s (%s%s%s%s) B=%p P=%p @%p"                    child SA
#   "%s: %p %s %s %s/%d -> %s/%d %s[%u]@%d (%s) @%p"                         flow (%s: optional "[prenat] ")
# The label is iked_sas / sa_childsas / sa_flows (per IKE SA), then iked_activesas, iked_flows and
# iked_dstid_sas repeat objects already listed, so objects are told apart by their pointer. The state and
# protocol names come from iked's maps (ESTABLISHED, SA_INIT, ...; ESP, AH, IPCOMP); addresses print as
# address:port when a port is set; SPIs as 0x%08x (child) and 0x%016llx (IKE). The IKE SA's UDP
# encapsulation flag is " udpencap" since ikev2.c rev 1.394 (OpenBSD 7.8 on) and " udpecap" before it:
# both are read. A line that fits none of the three shapes raises: a skipped IKE SA line would make a
# NAT-T lab read "no IKE SA" while its child SAs and flows still parse.

_POINTER = r"(?:0x[0-9a-fA-F]+|\(nil\)|\S+)"
_IKE_SA_RE = re.compile(
    rf"^(?P<label>\w+): (?P<ptr>{_POINTER}) rspi (?P<rspi>0x[0-9a-f]+) ispi (?P<ispi>0x[0-9a-f]+) "
    r"(?P<local>\S+?)->(?P<peer>[^<\s]+)<(?P<id>[^>]*)>\[(?P<pool>[^\]]*)\] "
    r"(?P<state>\S+) (?P<role>[ir])(?P<flags>(?: natt| udpencap| udpecap)*) nexti \S+ pol \S+$"
)
_CHILD_SA_RE = re.compile(
    rf"^(?P<label>\w*): (?P<ptr>{_POINTER}) (?P<proto>\S+) (?P<spi>0x[0-9a-fA-F]+|\d+) (?P<dir>in|out) "
    r"(?P<src>\S+) -> (?P<dst>\S+) \((?P<flags>[LRAP]*)\) B=\S+ P=\S+ @(?P<ike>\S+)$"
)
_FLOW_RE = re.compile(
    rf"^(?P<label>\w*): (?P<ptr>{_POINTER}) (?P<proto>\S+) (?P<dir>in|out) "
    r"(?P<src>\S+)/(?P<smask>\d+) -> (?P<dst>\S+)/(?P<dmask>\d+) (?:\[[^\]]*\] )?"
    r"\[(?P<ipproto>\d+)\]@(?P<rdomain>-?\d+) \((?P<flags>L?)\) @(?P<ike>\S+)$"
)


# iked's own words for a tunnel that will not come up by waiting, as iked logs them at its default level
# (no -v: syslog's daemon.info on OpenBSD; the same lines on stderr under -d, the Linux appliance's
# iked.log). Each was read in iked's sources: tests/data/openbsd/strings.yaml names file and revision, and
# tests/test_openbsd_strings.py holds every pattern against those recorded lines.
#   name: (pattern, the recorded lines it must find)
IKED_GIVES_UP: dict[str, tuple[str, tuple[str, ...]]] = {
    # ikev2.c: log_info "%s: authentication failed for %s"; the peer's notify as print_map names it
    "authentication": (r"authentication failed|AUTHENTICATION_FAILED", ("iked.auth_failed",)),
    # ikev2.c: log_info "%s: no proposal chosen" (ikev2_ike_auth_recv); the notify's name
    "proposals": (r"no proposal chosen|NO_PROPOSAL_CHOSEN", ("iked.no_proposal",)),
    # log.c: fatal()/fatalx() log "procname: message" and exit (parent's "configuration failed" too)
    "fatal": (r"(?:^|\]: )(?:parent|ikev2|ca|control): ", ("iked.fatal",)),
    # iked.c parent_sig_handler / proc.c proc_kill: a process of iked's died
    "lost child": (r"lost child: ", ("iked.lost_child",)),
    # parse.y parse_config's log_warnx: an iked.conf without one rule iked accepts
    "no rules": (r"no valid configuration rules found", ("iked.no_rules",)),
    # parse.y yyerror, stderr only: seen where iked runs in the foreground (-d) or under -n
    "syntax": (r"(?:^|\]: )\S+: \d+: ", ("iked.syntax_error",)),
    # iked.c parent_shutdown's log_warnx: the parent exits (after its start, that is iked dying)
    "parent exit": (r"parent terminating", ("iked.parent_terminating",)),
}
_IKED_FATAL_RE = re.compile("|".join(f"(?:{pattern})" for pattern, _ in IKED_GIVES_UP.values()))


def iked_fatal_line(log: str, pattern: re.Pattern[str] = _IKED_FATAL_RE) -> str | None:
    """The first line of iked's log that says the tunnel cannot come up (or matches `pattern`), or None."""
    for line in log.splitlines():
        if pattern.search(line):
            return line.strip()
    return None


#: `up --expect-failure` without a pattern expects any of iked's fatal lines.
IKED_FATAL = _IKED_FATAL_RE.pattern


def iked_identity(identity: str) -> str:
    """iked's way of naming an id ("FQDN/resp.example.com") for an id another daemon prints bare."""
    try:
        ipaddress.ip_address(identity)
    except ValueError:
        return f"UFQDN/{identity}" if "@" in identity else f"FQDN/{identity}"
    return f"IPV4/{identity}"


def strip_port(address: str) -> str:
    """iked's print_addr adds ':port' ('192.0.2.1:500', '[2001:db8::1]:500'); keep the address."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def _network(address: str, mask: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(f"{strip_port(address)}/{mask}", strict=False)
    except ValueError:
        return None  # IPv6 or "any": the readings only carry IPv4 flows


def parse_ikectl_show_sa(text: str, loaded_only: bool = True) -> SaState:
    """Parse `ikectl show sa` into IKE SAs, child SAs and flows.

    Each object is reported once, however many of iked's lists name it. With `loaded_only` (the default)
    child SAs and flows count only once iked has loaded them into the kernel (the "L" flag): an SA that is
    negotiated but not yet loaded carries no traffic. Flows take their peer from the IKE SA they belong to.
    Empty output (iked running, nothing negotiated) is an empty SaState; an ikectl error message (iked not
    running, socket missing) or any line none of iked's three shapes explains raises ParseError naming it.
    """
    ike: dict[str, IkeSa] = {}
    children: dict[str, ChildSa] = {}
    flows: dict[str, tuple[Flow, str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _IKE_SA_RE.match(line):
            flags = m["flags"].split()
            ike.setdefault(
                m["ptr"],
                IkeSa(
                    local=m["local"],
                    peer=m["peer"],
                    state=m["state"],
                    peer_id=m["id"],
                    initiator=m["role"] == "i",
                    natt=bool({"natt", "udpencap", "udpecap"} & set(flags)),
                    spi=f"{m['ispi']}:{m['rspi']}",
                ),
            )
        elif m := _CHILD_SA_RE.match(line):
            if loaded_only and "L" not in m["flags"]:
                continue
            spi = int(m["spi"], 16) if m["spi"].startswith("0x") else int(m["spi"])
            children.setdefault(
                m["ptr"],
                ChildSa(
                    spi=spi,
                    protocol=m["proto"].lower(),
                    direction=m["dir"],
                    src=strip_port(m["src"]),
                    dst=strip_port(m["dst"]),
                ),
            )
        elif m := _FLOW_RE.match(line):
            if loaded_only and m["flags"] != "L":
                continue
            src, dst = _network(m["src"], m["smask"]), _network(m["dst"], m["dmask"])
            if src is None or dst is None or m["ptr"] in flows:
                continue
            flows[m["ptr"]] = (Flow(direction=m["dir"], src=src, dst=dst), m["ike"])
        elif line.startswith(("ikectl:", "iked:")) or "No such file" in line or "Connection refused" in line:
            raise ParseError(f"ikectl show sa failed: {line}")
        else:
            raise ParseError(f"ikectl show sa printed a line iked's format does not explain: {line}")

    def with_peer(flow: Flow, ike_ptr: str) -> Flow:
        owner = ike.get(ike_ptr)
        if owner is None:
            return flow
        return Flow(flow.direction, flow.src, flow.dst, peer=strip_port(owner.peer))

    return SaState(
        ike_sas=tuple(ike.values()),
        child_sas=tuple(children.values()),
        flows=tuple(with_peer(flow, ptr) for flow, ptr in flows.values()),
    )


# --- ping ---------------------------------------------------------------------------------------------

_PING_SUMMARY_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def parse_ping_summary(text: str) -> PingResult:
    """Read ping's summary line.

    BSD and busybox print "5 packets transmitted, 5 packets received, 0.0% packet loss"; iputils prints
    "5 packets transmitted, 5 received, 0% packet loss, time 4005ms" (with "+N errors" when the network said
    no). Without a summary there is nothing to count: ParseError with ping's last line. That is how a name
    that does not resolve ends: OpenBSD's ping prints only gai_strerror's text (sbin/ping/ping.c,
    `errx(1, "%s", gai_strerror(error))`), e.g. "ping: name or service is not known".
    """
    matches = _PING_SUMMARY_RE.findall(text)
    if not matches:
        raise ParseError(f"ping printed no summary: {_last_line(text)}")
    transmitted, received = matches[-1]
    rtt = _PING_RTT_RE.findall(text)
    low, average = (float(rtt[-1][0]), float(rtt[-1][1])) if rtt else (None, None)
    return PingResult(int(transmitted), int(received), rtt_min_ms=low, rtt_avg_ms=average)


# "round-trip min/avg/max = 1.2/3.4/5.6 ms" (busybox), ".../max/std-dev = ..." (OpenBSD), "rtt min/avg/..."
# (iputils): the first two numbers are the minimum and the average.
_PING_RTT_RE = re.compile(r"(?:round-trip|rtt) min/avg/\S* = ([\d.]+)/([\d.]+)/")


# --- tcpdump ------------------------------------------------------------------------------------------
#
# Shapes handled (with or without a leading timestamp, "12:34:56.789012 " or "2024-01-02 12:34:56.789 "):
#   Linux:    IP 10.0.1.2 > 10.0.2.2: ICMP echo request, id 7, seq 1, length 64
#             IP 192.0.2.1 > 198.51.100.1: ESP(spi=0x1f4a7c35,seq=0x1), length 136
#             IP 192.0.2.1.4500 > 198.51.100.1.4500: UDP-encap: ESP(spi=0x1f4a7c35,seq=0x1), length 136
#   OpenBSD (usr.sbin/tcpdump: print-ip.c prints "A > B: " before the ESP printer, print-ipsec.c
#   "esp spi 0x%08x seq %u len %d", print-udpencap.c "udpencap: " before ESP or IKE on port 4500;
#   AH prints its own pair, "ah A > B spi 0x%08x seq %u len %d"; tcpdump before print-ipsec.c 1.27 also
#   printed ESP as "esp A > B spi ..."):
#             10.0.1.2 > 10.0.2.2: icmp: echo request                  (id and seq only with -v)
#             192.0.2.1 > 198.51.100.1: esp spi 0x1f4a7c35 seq 1 len 136
#             192.0.2.1.4500 > 198.51.100.1.4500: udpencap: esp spi 0x1f4a7c35 seq 2 len 136
#   enc0 (print-enc.c "SPI 0x%08x: ", then print-ip.c; a tunnel-mode packet is IP in IP, and without -v
#   only the inner packet is printed, followed by " (encap)"; with -v the outer pair comes first):
#             (authentic,confidential): SPI 0x1f4a7c35: 10.0.1.2 > 10.0.2.2: icmp: echo request (encap)
#             (authentic,confidential): SPI 0x1f4a7c35: 192.0.2.1 > 198.51.100.1: 10.0.1.2 > 10.0.2.2: ...
#             (unprotected): SPI 0x00000000: ...

_TIMESTAMP_RE = re.compile(r"^(?:\d{4}-\d{2}-\d{2} )?\d{1,2}:\d{2}:\d{2}\.\d+\s+|^\d{9,}\.\d+\s+")
_ENC_RE = re.compile(r"^\((?P<flags>[a-z,]+)\): SPI 0x(?P<spi>[0-9a-fA-F]+): (?P<rest>.*)$")
#: AH (and ESP before print-ipsec.c 1.27) print the address pair after the protocol name.
_IPSEC_WIRE_RE = re.compile(
    r"^(?P<proto>esp|ah) (?P<src>\S+) > (?P<dst>\S+) spi 0x(?P<spi>[0-9a-fA-F]+)\b(?P<rest>.*)$"
)
_FLOW_LINE_RE = re.compile(
    r"^(?:(?:IP6?|ip6?) )?(?P<src>[0-9A-Fa-f.:]+) > (?P<dst>[0-9A-Fa-f.:]+): (?P<summary>.*)$"
)
_SPI_IN_SUMMARY_RE = re.compile(r"\b(?:ESP|AH)\(spi=0x(?P<spi>[0-9a-fA-F]+)|\bspi 0x(?P<spi2>[0-9a-fA-F]+)")


def _tcpdump_address(token: str) -> str:
    """'192.0.2.1.500' -> '192.0.2.1' (tcpdump appends ports with a dot); other forms unchanged."""
    return _tcpdump_endpoint(token)[0]


def _tcpdump_port(token: str) -> int | None:
    return _tcpdump_endpoint(token)[1]


def _tcpdump_endpoint(token: str) -> tuple[str, int | None]:
    parts = token.split(".")
    if len(parts) == 5 and all(p.isdigit() for p in parts):
        return ".".join(parts[:4]), int(parts[4])
    return token, None


def _protocol(summary: str) -> str:
    s = summary.lstrip()
    lowered = s.lower()
    # ESP or IKE inside UDP 4500 (NAT-T) is named by what it carries; the ports say it is encapsulated.
    for encapsulation in ("udpencap: ", "udp-encap: "):
        if lowered.startswith(encapsulation):
            s = s[len(encapsulation) :]
            lowered = lowered[len(encapsulation) :]
    if "esp(spi=" in lowered or lowered.startswith("esp "):
        return "ESP"
    if lowered.startswith(("ah(", "ah ")):
        return "AH"
    if lowered.startswith(("icmp", "icmp6")):
        return "ICMP"
    if lowered.startswith("isakmp") or "ikev2" in lowered[:20]:
        return "IKE"
    if lowered.startswith(("udp", "nat-t keepalive")):
        return "UDP"
    if lowered.startswith(("flags [", "tcp")) or re.match(r"^[SFRPUEW.]+ \d", s):
        return "TCP"
    return ""


def _packet_from(rest: str, raw: str, spi: int | None) -> Packet | None:
    if m := _IPSEC_WIRE_RE.match(rest):
        return Packet(
            src=_tcpdump_address(m["src"]),
            dst=_tcpdump_address(m["dst"]),
            summary=rest,
            spi=int(m["spi"], 16) if spi is None else spi,
            protocol=m["proto"].upper(),
            raw=raw,
        )
    m = _FLOW_LINE_RE.match(rest)
    if not m:
        return None
    # A tunnel-mode packet on enc0 may show its outer pair first ("A > B: a > b: icmp: ..."): the inner pair
    # is the traffic the tunnel carries, which is what a decapsulated capture is about.
    while inner := _FLOW_LINE_RE.match(m["summary"].strip()):
        m = inner
    summary = m["summary"].strip()
    if spi is None and (s := _SPI_IN_SUMMARY_RE.search(summary)):
        spi = int(s["spi"] or s["spi2"], 16)
    return Packet(
        src=_tcpdump_address(m["src"]),
        dst=_tcpdump_address(m["dst"]),
        summary=summary,
        spi=spi,
        protocol=_protocol(summary),
        raw=raw,
        src_port=_tcpdump_port(m["src"]),
        dst_port=_tcpdump_port(m["dst"]),
    )


def parse_tcpdump_lines(text: str) -> tuple[Packet, ...]:
    """Packets from `tcpdump -n` text, one per line that shows a source and a destination.

    Banner lines ("listening on enc0", "reading from file ...") and anything without `a > b` are skipped.
    Ports are dropped from addresses (tcpdump's '192.0.2.1.500' is '192.0.2.1'); the full line stays in
    `raw`. On enc0 the SPI comes from the enc header; on the wire from the ESP/AH header.
    """
    packets: list[Packet] = []
    for raw in text.splitlines():
        line = _TIMESTAMP_RE.sub("", raw.strip(), count=1)
        spi: int | None = None
        if m := _ENC_RE.match(line):
            spi = int(m["spi"], 16)
            line = m["rest"]
        packet = _packet_from(line, raw.strip(), spi)
        if packet is not None:
            packets.append(packet)
    return tuple(packets)


# --- OpenBSD netstat ----------------------------------------------------------------------------------
#
# usr.bin/netstat/inet.c prints "esp:" then "\t%u input ESP packet%s", "\t%u output ESP packet%s", ...,
# "\t%llu input byte%s", "\t%llu output byte%s"; "ah:" then "\t%u input AH packets" (no plural logic), ...
# With -s (not -ss) zero counters are printed too. "input bytes" appears in both sections.

_COUNTER_RE = re.compile(r"^\s*(\d+) (.+?)\s*$")


def _netstat_sections(text: str) -> dict[str, dict[str, int]]:
    sections: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines():
        if re.match(r"^[a-z0-9]+:\s*$", line):
            current = sections.setdefault(line.strip()[:-1], {})
        elif current is not None and (m := _COUNTER_RE.match(line)):
            current[m[2]] = int(m[1])
    return sections


def _counter(section: dict[str, int], *names: str) -> int | None:
    for name in names:
        if name in section:
            return section[name]
    return None


def parse_netstat_esp_ah(text: str) -> IpsecCounters:
    """ESP and AH packet counters (and ESP bytes) from `netstat -s -p esp; netstat -s -p ah`."""
    sections = _netstat_sections(text)
    missing = [name for name in ("esp", "ah") if name not in sections]
    if missing:
        raise ParseError(f"netstat printed no {' or '.join(missing)} statistics: {_last_line(text)}")
    esp, ah = sections["esp"], sections["ah"]
    values = {
        "esp_in": _counter(esp, "input ESP packets", "input ESP packet"),
        "esp_out": _counter(esp, "output ESP packets", "output ESP packet"),
        "ah_in": _counter(ah, "input AH packets", "input AH packet"),
        "ah_out": _counter(ah, "output AH packets", "output AH packet"),
    }
    absent = [name for name, value in values.items() if value is None]
    if absent:
        raise ParseError(f"netstat statistics lack {', '.join(absent)}")
    return IpsecCounters(
        esp_in=values["esp_in"] or 0,
        esp_out=values["esp_out"] or 0,
        ah_in=values["ah_in"] or 0,
        ah_out=values["ah_out"] or 0,
        esp_in_bytes=_counter(esp, "input bytes", "input byte") or 0,
        esp_out_bytes=_counter(esp, "output bytes", "output byte") or 0,
    )


# --- OpenBSD ipsecctl -sa -----------------------------------------------------------------------------
#
# "FLOWS:" then "flow esp in from A to B peer P srcid S dstid D type require" lines (or "No flows"),
# "SAD:" then "esp tunnel from A to B spi 0x%08x auth X enc Y" lines (or "No entries").

_KEYWORDS = {"from", "to", "peer", "srcid", "dstid", "type", "proto", "port", "spi", "auth", "enc", "comp"}


def ipsecctl_keywords(tokens: list[str]) -> dict[str, str]:
    """`keyword value` pairs of an ipsecctl line (the first of each keyword kept)."""
    values: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        if tokens[i] in _KEYWORDS and i + 1 < len(tokens):
            values.setdefault(tokens[i], tokens[i + 1])
            i += 2
        else:
            i += 1
    return values


def parse_ipsecctl_sa(text: str, local_addresses: Iterable[str] = ()) -> SaState:
    """Flows and SAs as the OpenBSD kernel holds them (`ipsecctl -sa`); no IKE SAs (the kernel has none).

    ipsecctl does not say whether an SA is inbound or outbound: with `local_addresses` an SA whose source
    is local is "out" and one whose destination is local is "in"; otherwise the direction is "".
    IPv6 and "type deny" flows (iked's default IPv6 block) are left out.
    """
    if "FLOWS:" not in text and "SAD:" not in text:
        raise ParseError(f"ipsecctl -sa printed neither FLOWS nor SAD: {_last_line(text)}")
    local = set(local_addresses)
    flows: list[Flow] = []
    children: list[ChildSa] = []
    for raw in text.splitlines():
        tokens = raw.split()
        if len(tokens) < 3:
            continue
        if tokens[0] == "flow" and tokens[2] in ("in", "out"):
            kw = ipsecctl_keywords(tokens[3:])
            if kw.get("type") == "deny" or "from" not in kw or "to" not in kw:
                continue
            try:
                src = ipaddress.IPv4Network(kw["from"], strict=False)
                dst = ipaddress.IPv4Network(kw["to"], strict=False)
            except ValueError:
                continue
            flows.append(Flow(direction=tokens[2], src=src, dst=dst, peer=kw.get("peer")))
        elif tokens[0] in ("esp", "ah", "ipcomp") and "spi" in tokens:
            kw = ipsecctl_keywords(tokens[1:])
            try:
                spi = int(kw["spi"], 16)
            except (KeyError, ValueError):
                continue
            outer_src, outer_dst = kw.get("from", ""), kw.get("to", "")
            direction = "out" if outer_src in local else "in" if outer_dst in local else ""
            children.append(ChildSa(spi, tokens[0], direction, src=outer_src, dst=outer_dst))
    return SaState(child_sas=tuple(children), flows=tuple(flows))


__all__ = [
    "ParseError",
    "iked_fatal_line",
    "parse_ikectl_show_sa",
    "parse_ipsecctl_sa",
    "parse_netstat_esp_ah",
    "parse_ping_summary",
    "parse_tcpdump_lines",
    "strip_port",
]
