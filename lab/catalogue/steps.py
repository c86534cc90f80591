"""The catalogue's vocabulary: each step a case can take, its fields and their types, read strictly.

A case's `steps:` is a list; each step is one mapping from its type to its fields
(`- ping: {from: init, to: resp, count: 5}`), or to one value for a type that has a main field
(`- tunnel: established`). Every field is checked here, before any lab is touched: an unknown type or
field, a wrong type, a host the lab does not have, a regex that does not compile — each is one problem
naming the field (`steps[2].ping.cout: unknown field (fields: from, to, count, …)`).

Where a field names hosts, `gateways` means every IPsec gateway of the lab. An address is a host's name
(a gateway's public address, another host's first), `HOST.lan` (the network a gateway protects),
`HOST.address6` / `HOST.lan6` (the same in IPv6, with `setup: {ipv6: true}`), or a literal address or
network; a flow or SA matches an expected network when it lies inside it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

from lab import gate

#: Comparisons a counter can be held to: `>= 5`, `== 0`, `> 0`, `<= 3`.
COMPARISON = re.compile(r"^\s*(>=|<=|==|>|<)\s*(\d+)\s*$")
ADDRESS_SUFFIXES = ("lan", "address6", "lan6")
DEFAULT_WITHIN = 30.0  # seconds a waiting step waits unless it says otherwise


class Problems:
    """Problems found while reading one file, each `where: message`, raised together by the caller."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)


# --- field kinds ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How one field is read: `read(value, where, problems, hosts)` returns the typed value or None."""

    name: str  # for messages: "a host", "a list of hosts", ...
    read: Callable[[Any, str, Problems, frozenset[str]], Any]


def _host(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if not isinstance(value, str) or value not in hosts:
        problems.add(
            where, f"{gate.shown(value)} is not a host of the lab (hosts: {', '.join(sorted(hosts))})"
        )
        return None
    return value


def _hosts(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> tuple[str, ...] | None:
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.add(where, "expected a host, a list of hosts, or gateways")
        return None
    out = []
    for i, item in enumerate(items):
        if item == "gateways":
            out.append("gateways")
        elif (
            name := _host(item, f"{where}[{i}]" if isinstance(value, list) else where, problems, hosts)
        ) is not None:
            out.append(name)
    return tuple(out)


def _address(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(where, "expected an address: HOST, HOST.lan, HOST.address6, HOST.lan6 or a literal")
        return None
    host, _, suffix = value.partition(".")
    if host in hosts and (not suffix or suffix in ADDRESS_SUFFIXES):
        return value
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        problems.add(
            where,
            f"{gate.shown(value)} is neither a host of the lab ({', '.join(sorted(hosts))}), HOST.lan, "
            "HOST.address6, HOST.lan6 nor an IP address or network",
        )
        return None
    return value


#: A case's regexes run over daemons' logs: a long one is where catastrophic backtracking hides.
REGEX_CHARS = 200


def _regex(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if not isinstance(value, str) or not value or len(value) > REGEX_CHARS:
        problems.add(where, f"expected a regular expression of at most {REGEX_CHARS} characters")
        return None
    try:
        re.compile(value)
    except re.error as e:
        problems.add(where, f"{gate.shown(value)} is not a regular expression: {e}")
        return None
    return value


def _plain(kind: type, label: str) -> Kind:
    def read(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.add(where, f"expected {label}, not {gate.shown(value)}")
            return None
        if isinstance(value, int | float) and value < 0:
            problems.add(where, f"expected {label} of 0 or more, not {gate.shown(value)}")
            return None
        return value

    return Kind(label, read)


def _choice(*choices: str) -> Kind:
    def read(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
        if value not in choices:
            problems.add(where, f"{gate.shown(value)} is not one of {', '.join(choices)}")
            return None
        return str(value)

    return Kind(f"one of {', '.join(choices)}", read)


def _words(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> tuple[str, ...] | None:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) and i for i in items):
        problems.add(where, "expected a word or a list of words")
        return None
    return tuple(items)


def _comparison(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"== {value}"
    if not isinstance(value, str) or not COMPARISON.match(value):
        problems.add(where, f"expected a comparison such as '>= 5' or '== 0', not {gate.shown(value)}")
        return None
    return value


HOST = Kind("a host", _host)
HOSTS = Kind("a host, a list of hosts, or gateways", _hosts)
ADDRESS = Kind("an address", _address)
REGEX = Kind("a regular expression", _regex)
INT = _plain(int, "a whole number")
SECONDS = _plain(float, "a number of seconds")
TEXT = _plain(str, "a text")
BOOL = _plain(bool, "true or false")
WORDS = Kind("a word or a list of words", _words)
COMPARE = Kind("a comparison", _comparison)


def spec(kind: Kind, default: Any = MISSING, doc: str = "") -> Any:
    """A step field: how it is read, its default (none: required) and what it means (docs/catalogue.md)."""
    return field(default=default, metadata={"kind": kind, "doc": doc})


# --- steps --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a case. `TYPE` is its name in case.yaml; `MAIN`, when set, is the field a bare value
    fills (`tunnel: established` is `tunnel: {state: established}`)."""

    TYPE: ClassVar[str] = ""
    MAIN: ClassVar[str] = ""
    DOC: ClassVar[str] = ""


@dataclass(frozen=True)
class Tunnel(Step):
    TYPE = "tunnel"
    MAIN = "state"
    DOC = (
        "established: wait until every gateway named has an ESTABLISHED IKE SA with child SAs both ways "
        "(iked's fatal lines end the wait at once); none: no gateway has one, and no keyed SA joins them "
        "in the kernel"
    )
    state: str = spec(_choice("established", "none"), doc="established or none")
    on: tuple[str, ...] = spec(HOSTS, ("gateways",), "the gateways it concerns")
    within: float = spec(SECONDS, 90.0, "seconds to wait for an established tunnel")


@dataclass(frozen=True)
class IkeSaCheck(Step):
    TYPE = "ike_sa"
    DOC = "IKE SAs as the daemon shows them (`ikectl show sa`): how many match the fields given"
    on: tuple[str, ...] = spec(HOSTS, ("gateways",), "where")
    state: str = spec(TEXT, "ESTABLISHED", "the IKE SA's state (ESTABLISHED, SA_INIT, …), or any")
    count: str = spec(COMPARE, ">= 1", "how many such IKE SAs (a number or a comparison)")
    hold: float = spec(
        SECONDS, 0.0, "seconds the count must keep holding, read every half second (yaml: for)"
    )
    peer_id: str = spec(TEXT, "", "the peer's id as iked prints it, FQDN/right, UFQDN/…, ASN1_DN/…")
    peer: str = spec(ADDRESS, "", "the peer's address")
    flags: tuple[str, ...] = spec(WORDS, (), "natt, udpencap (NAT-T)")
    initiator: str = spec(_choice("yes", "no", "any"), "any", "whether this gateway initiated it")


@dataclass(frozen=True)
class ChildSaCheck(Step):
    TYPE = "child_sa"
    DOC = (
        "SAs in the kernel's SAD between two hosts (`ipsecctl -sa` / `ip xfrm state`): by default at least "
        "one each way with the fields given"
    )
    on: tuple[str, ...] = spec(HOSTS, ("gateways",), "where")
    between: tuple[str, ...] = spec(HOSTS, ("gateways",), "the two ends (outer addresses)")
    protocol: str = spec(_choice("esp", "ah", "ipcomp"), "esp")
    mode: str = spec(_choice("tunnel", "transport", "any"), "any")
    enc: str = spec(TEXT, "", "iked.conf's name: aes-256, aes-128-gcm, …")
    auth: str = spec(TEXT, "", "hmac-sha2-384, …")
    comp: str = spec(TEXT, "", "deflate, …")
    udpencap: str = spec(_choice("yes", "no", "any"), "any", "ESP inside UDP")
    count: str = spec(COMPARE, "", "how many in all; default: at least one each way")
    ipv6: bool = spec(BOOL, False, "between the hosts' IPv6 addresses")


@dataclass(frozen=True)
class FlowCheck(Step):
    TYPE = "flow"
    DOC = "a flow in the kernel's SPD (`ipsecctl -sa` FLOWS / `ip xfrm policy`), or its absence"
    on: tuple[str, ...] = spec(HOSTS, doc="where")
    src: str = spec(ADDRESS, doc="traffic from (a flow inside this network matches)")
    dst: str = spec(ADDRESS, doc="traffic to")
    direction: str = spec(_choice("in", "out", "both"), "both", "both: out from src to dst and in back")
    protocol: str = spec(_choice("esp", "ah", "ipcomp", "any"), "any")
    peer: str = spec(ADDRESS, "", "the far end of the tunnel")
    absent: bool = spec(BOOL, False, "no such flow")


@dataclass(frozen=True)
class Ping(Step):
    TYPE = "ping"
    DOC = "pings from a host to an address; with `tunnel`, a decapsulated capture (enc0) judges the path"
    src: str = spec(HOST, doc="the host that pings (yaml: from)")
    dst: str = spec(ADDRESS, doc="the address pinged (yaml: to)")
    count: int = spec(INT, 5)
    replies: str = spec(_choice("all", "none", "some", "any"), "all")
    tunnel: str = spec(_choice("both", "none", "unchecked"), "unchecked", "both ways through IPsec, or never")
    capture_at: str = spec(HOST, "", "where the decapsulated capture runs (default: the pinging host)")
    size: int = spec(INT, 0, "bytes of payload (0: ping's default)")
    ipv6: bool = spec(BOOL, False, "ping the IPv6 address")


@dataclass(frozen=True)
class Log(Step):
    TYPE = "log"
    DOC = "the daemon's log since the case started it: a line matches (waiting up to `within`), or none does"
    on: tuple[str, ...] = spec(HOSTS, doc="where")
    matches: str = spec(REGEX, "", "a line that must appear")
    absent: str = spec(REGEX, "", "a line that must not appear")
    within: float = spec(SECONDS, DEFAULT_WITHIN)


@dataclass(frozen=True)
class Rekeyed(Step):
    TYPE = "rekeyed"
    DOC = (
        "the child SAs (and the IKE SA with `ike: true`) have keys none of which they had when the last "
        "`tunnel: established` step held: iked rekeyed (or renegotiated) them"
    )
    on: tuple[str, ...] = spec(HOSTS, ("gateways",), "where")
    ike: bool = spec(BOOL, False, "the IKE SA too")
    within: float = spec(SECONDS, 90.0)


@dataclass(frozen=True)
class Mark(Step):
    TYPE = "mark"
    MAIN = "on"
    DOC = "from here on, `log` steps read only what the daemon logs after this point"
    on: tuple[str, ...] = spec(HOSTS, ("gateways",), "where")


@dataclass(frozen=True)
class Counters(Step):
    TYPE = "counters"
    DOC = "ESP/AH packet counters since the case's daemons started (`netstat -s -p esp` / per-SA counters)"
    on: tuple[str, ...] = spec(HOSTS, doc="where")
    esp_in: str = spec(COMPARE, "")
    esp_out: str = spec(COMPARE, "")
    ah_in: str = spec(COMPARE, "")
    ah_out: str = spec(COMPARE, "")


@dataclass(frozen=True)
class Capture(Step):
    TYPE = "capture"
    DOC = (
        "what crosses a link while pings run (packets of the pinged address's IP version): protocols seen, "
        "protocols never seen, UDP ports"
    )
    link: str = spec(TEXT, doc="the link (wan1, wan2, …)")
    at: str = spec(HOST, doc="the host whose interface on the link is captured")
    ping_from: str = spec(HOST, doc="the pings during the capture: from")
    ping_to: str = spec(ADDRESS, doc="to")
    count: int = spec(INT, 3)
    has: tuple[str, ...] = spec(WORDS, (), "protocols that must cross: ESP, AH, IKE, ICMP, UDP")
    lacks: tuple[str, ...] = spec(WORDS, (), "protocols that must not")
    udp_port: int = spec(INT, 0, "ESP travels in UDP on this port (NAT-T)")


@dataclass(frozen=True)
class Run(Step):
    TYPE = "run"
    MAIN = "command"
    DOC = "a command on a host (an action: ikectl reset sa, a second address); it must exit as told"
    command: str = spec(TEXT, doc="a shell command in the guest")
    on: tuple[str, ...] = spec(HOSTS, ("gateways",), "where")
    status: str = spec(_choice("ok", "fail", "any"), "ok")
    output: str = spec(REGEX, "", "a regex its output must match")


@dataclass(frozen=True)
class Restart(Step):
    TYPE = "restart"
    MAIN = "on"
    DOC = "the IKE daemon stopped and started again on hosts (its log mark moves to the new start)"
    on: tuple[str, ...] = spec(HOSTS, doc="where")


@dataclass(frozen=True)
class Traffic(Step):
    TYPE = "traffic"
    DOC = "a steady stream of echo requests (50 a second) from a host; at most `loss` percent lost"
    src: str = spec(HOST, doc="yaml: from")
    dst: str = spec(ADDRESS, doc="yaml: to")
    seconds: float = spec(SECONDS, 10.0)
    size: int = spec(INT, 1000)
    loss: float = spec(SECONDS, 0.0, "percent of packets that may be lost")


STEP_TYPES: dict[str, type[Step]] = {
    cls.TYPE: cls
    for cls in (
        Tunnel,
        IkeSaCheck,
        ChildSaCheck,
        FlowCheck,
        Ping,
        Log,
        Mark,
        Rekeyed,
        Counters,
        Capture,
        Run,
        Restart,
        Traffic,
    )
}
#: YAML spellings of fields whose Python name is a keyword or reads badly.
YAML_NAMES = {"src": "from", "dst": "to", "hold": "for"}


def yaml_name(name: str) -> str:
    return YAML_NAMES.get(name, name)


def fields_of(cls: type[Step]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "kind" in f.metadata]


def read_step(raw: Any, where: str, problems: Problems, hosts: Iterable[str]) -> Step | None:
    """One step from case.yaml, or None with its problems added."""
    known = frozenset(hosts)
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.add(
            where, f"a step is one mapping of a step type to its fields (types: {', '.join(STEP_TYPES)})"
        )
        return None
    ((kind, value),) = raw.items()
    cls = STEP_TYPES.get(kind)
    if cls is None:
        problems.add(where, f"unknown step type {gate.shown(kind)} (types: {', '.join(STEP_TYPES)})")
        return None
    where = f"{where}.{kind}"
    if not isinstance(value, dict):
        if not cls.MAIN:
            problems.add(where, "expected a mapping of fields")
            return None
        value = {cls.MAIN: value}
    fields = fields_of(cls)
    names = {yaml_name(f.name): f for f in fields}
    before = len(problems.items)
    for key in value:
        if key not in names:
            problems.add(f"{where}.{gate.key(key)}", f"unknown field (fields: {', '.join(names)})")
    args: dict[str, Any] = {}
    for name, f in names.items():
        if name not in value:
            if f.default is MISSING:
                problems.add(f"{where}.{name}", "missing (required)")
            continue
        typed = f.metadata["kind"].read(value[name], f"{where}.{name}", problems, known)
        if typed is not None:
            args[f.name] = typed
    if len(problems.items) > before:
        return None
    step = cls(**args)
    for message in _conflicts(step):
        problems.add(where, message)
    return None if len(problems.items) > before else step


def _conflicts(step: Step) -> list[str]:
    """Field combinations that say two things at once."""
    if isinstance(step, Log) and bool(step.matches) == bool(step.absent):
        return ["give exactly one of matches or absent"]
    if isinstance(step, Counters) and not any((step.esp_in, step.esp_out, step.ah_in, step.ah_out)):
        return ["give at least one of esp_in, esp_out, ah_in, ah_out"]
    if isinstance(step, ChildSaCheck) and len(step.between) not in (1, 2):
        return ["between: two hosts (or gateways)"]
    return []


def compare(comparison: str, value: int) -> bool:
    m = COMPARISON.match(comparison)
    assert m, comparison
    op, number = m.group(1), int(m.group(2))
    return {
        ">=": value >= number,
        "<=": value <= number,
        "==": value == number,
        ">": value > number,
        "<": value < number,
    }[op]
