"""The lab's shape: hosts, point-to-point links, addresses, routes and IPsec gateways.

Loaded from YAML and validated as a whole: every problem is collected, each naming the file and the field,
before one TopologyError is raised. Knows nothing of libvirt or guest operating systems.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from lab import gate
from lab.errors import TopologyError
from lab.gate import shown
from lab.ikedconf import gateway_name_problem, macro_name, srcid_problem

GUIDE = "guide.yaml"


@dataclass(frozen=True)
class Interface:
    index: int  # position on the host: eth{index} / vio{index}
    link: str
    address: ipaddress.IPv4Interface  # address with the link's prefix length


@dataclass(frozen=True)
class Link:
    name: str
    subnet: ipaddress.IPv4Network
    ends: dict[str, ipaddress.IPv4Address]  # exactly two hosts

    def other_end(self, host: str) -> str:
        return next(h for h in self.ends if h != host)


@dataclass(frozen=True)
class Ipsec:
    peer: str
    mode: Literal["active", "passive"]
    srcid: str
    protect: str  # the link whose subnet this gateway protects


@dataclass(frozen=True)
class Host:
    name: str
    interfaces: tuple[Interface, ...]
    gateway: ipaddress.IPv4Address | None = None
    forwarding: bool = False
    ipsec: Ipsec | None = None
    platform: str | None = None  # None: the lab's default platform
    iked: str | None = None  # iked version on a gateway (e.g. "7.4"); None: the platform's default

    def interface_on(self, link: str) -> Interface:
        return next(i for i in self.interfaces if i.link == link)

    @property
    def uplink(self) -> Interface:
        """The interface the default route leaves by (a gateway's public side); the first one otherwise."""
        if self.gateway is not None:
            for iface in self.interfaces:
                if self.gateway in iface.address.network:
                    return iface
        return self.interfaces[0]


@dataclass(frozen=True)
class Topology:
    path: Path
    hosts: dict[str, Host]
    links: dict[str, Link]
    extra: dict[str, Any] = field(default_factory=dict)
    # The validated file's text: what a lab records at `up` (lab/blueprint.py) and digests for its
    # snapshot, so the file can change or go afterwards without changing the lab.
    source: str = field(default="", repr=False, compare=False)

    def host(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def gateways(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.ipsec]

    def peer_of(self, host: Host) -> Host:
        assert host.ipsec, f"{host.name} is not an IPsec gateway"
        return self.hosts[host.ipsec.peer]

    def protected_subnet(self, host: Host) -> ipaddress.IPv4Network:
        assert host.ipsec, f"{host.name} is not an IPsec gateway"
        return self.links[host.ipsec.protect].subnet


def guide_path() -> Path:
    return Path(str(resources.files("lab") / "topologies" / GUIDE))


def load(path: Path | str | None, known_platforms: tuple[str, ...]) -> Topology:
    """Load and validate a topology file (the guide's lab when path is None); a host may name one of
    `known_platforms` (lab.placement.load_topology passes the registry's)."""
    path = Path(path) if path else guide_path()
    try:
        text = gate.read_text(path, gate.TOPOLOGY_BYTES)
    except gate.GateError as e:
        raise TopologyError(path, [e.message]) from None
    return parse(text, path, known_platforms)


def parse(text: str, path: Path, known_platforms: tuple[str, ...]) -> Topology:
    try:
        data = _load_yaml(text)
    except _Refused as e:
        raise TopologyError(path, [str(e)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or "unreadable"
        raise TopologyError(path, [f"{where}not valid YAML: {problem}"]) from None
    return dataclasses.replace(_Validator(path, known_platforms).topology(data), source=text)


class _Refused(yaml.YAMLError):
    """YAML that parses but that a topology may not hold (a key given twice, an alias)."""


Refused = _Refused  # for other hand-written files read with load_yaml


def _load_yaml(text: str, loader_class: type[_StrictLoader] | None = None) -> Any:
    """The YAML document, refused when it uses an alias: a topology has no need of one, and aliases nest
    into values whose expansion is exponential in the file's size (a billion laughs)."""
    loader = (loader_class or _StrictLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_aliases(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_aliases(root: yaml.Node) -> None:
    """An alias is the anchored node met a second time: walk the node graph once, stop at the first."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            line = node.start_mark.line + 1
            raise _Refused(
                f"line {line}: a value anchored here (&) is used again by an alias (*): "
                "topologies take no aliases"
            )
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            todo += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value


#: PyYAML's safe loader, parsing in C when libyaml is there: ten times faster, and every command reads YAML.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(SafeLoader):  # type: ignore[misc,valid-type]
    """A safe loader that refuses a key given twice (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _Refused(f"line {line}: {shown(key)} is defined twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: For other files people write by hand (case folders): the same loader, a key given twice and aliases
#: refused alike (`load_yaml`, `Refused`).
StrictLoader = _StrictLoader
load_yaml = _load_yaml


class _Validator:
    def __init__(self, path: Path, known_platforms: tuple[str, ...]) -> None:
        self.path = path
        self.known_platforms = known_platforms
        self.problems: list[str] = []
        self.misaddressed: set[str] = set()  # hosts with a bad address: their routes are not judged again

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def topology(self, data: Any) -> Topology:
        if not isinstance(data, dict):
            raise TopologyError(self.path, ["the file must be a mapping with 'links' and 'hosts'"])
        for key in data:
            if key not in ("links", "hosts", "name", "description"):
                self.problem(gate.key(key), "unknown section (expected links, hosts)")
        raw_links = self.names(self.mapping(data.get("links"), "links"), "links", gate.LINK)
        raw_hosts = self.names(self.mapping(data.get("hosts"), "hosts"), "hosts", gate.HOST)
        links = self.links(raw_links, raw_hosts)
        self.check_unique_addresses(links)
        hosts = {n: self.host(n, h, links) for n, h in raw_hosts.items()}
        self.check_ipsec(hosts)
        if self.problems:
            raise TopologyError(self.path, self.problems)
        return Topology(self.path, hosts, links)

    def mapping(self, value: Any, where: str) -> dict[Any, Any]:
        if value is None:
            self.problem(where, "missing")
            return {}
        if not isinstance(value, dict):
            self.problem(where, "must be a mapping")
            return {}
        return value

    def names(self, section: dict[Any, Any], where: str, kind: gate.Name) -> dict[str, Any]:
        """The section's entries whose names pass the gate; each other one is a problem (and is left out,
        so that no later message, path or picture carries it)."""
        kept: dict[str, Any] = {}
        for name, value in section.items():
            if problem := kind.problem(name):
                self.problem(where, problem)
            else:
                kept[name] = value
        return kept

    def links(self, raw_links: dict[Any, Any], raw_hosts: dict[Any, Any]) -> dict[str, Link]:
        links: dict[str, Link] = {}
        for name, raw in raw_links.items():
            where = f"links.{name}"
            raw = self.mapping(raw, where)
            try:
                subnet = ipaddress.IPv4Network(self.scalar(raw.get("subnet")), strict=True)
            except ValueError as e:
                self.problem(f"{where}.subnet", f"{shown(raw.get('subnet'))} is not an IPv4 subnet ({e})")
                continue
            raw_ends = self.mapping(raw.get("ends"), f"{where}.ends")
            if raw_ends and len(raw_ends) != 2:
                self.problem(f"{where}.ends", f"a link joins exactly two hosts, not {len(raw_ends)}")
            ends: dict[str, ipaddress.IPv4Address] = {}
            for host, address in raw_ends.items():
                field_ = f"{where}.ends.{gate.key(host)}"
                if host not in raw_hosts:
                    self.problem(field_, f"unknown host {shown(host)} (hosts are: {', '.join(raw_hosts)})")
                    continue
                try:
                    ip = ipaddress.IPv4Address(self.scalar(address))
                except ValueError:
                    self.problem(field_, f"{shown(address)} is not an IPv4 address")
                    continue
                if ip not in subnet:
                    self.problem(field_, f"{ip} is outside the link's subnet {subnet}")
                    self.misaddressed.add(str(host))
                elif ip in (subnet.network_address, subnet.broadcast_address):
                    self.problem(field_, f"{ip} is the subnet's network or broadcast address")
                    self.misaddressed.add(str(host))
                ends[host] = ip
            links[name] = Link(name, subnet, ends)
        return links

    @staticmethod
    def scalar(value: Any) -> str:
        """A YAML scalar as text for a parser; a mapping or list is no address (and is never str()'d)."""
        if isinstance(value, dict | list):
            raise ValueError("a single value is expected")
        return str(value)

    def host(self, name: str, raw: Any, links: dict[str, Link]) -> Host:
        where = f"hosts.{name}"
        raw = self.mapping(raw, where) if raw is not None else {}
        for key in raw:
            if key not in ("interfaces", "gateway", "forwarding", "ipsec", "platform", "iked"):
                self.problem(
                    f"{where}.{gate.key(key)}",
                    "unknown field (expected interfaces, gateway, forwarding, ipsec, platform, iked)",
                )
        on = [ln for ln, link in links.items() if name in link.ends]
        wanted = raw.get("interfaces", on)
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            self.problem(f"{where}.interfaces", "must be a list of link names")
            wanted = on
        interfaces: list[Interface] = []
        for link_name in dict.fromkeys(wanted):
            if wanted.count(link_name) > 1:
                # Two interfaces on one link would hold one address twice.
                times = wanted.count(link_name)
                self.problem(f"{where}.interfaces", f"link {shown(link_name)} is listed {times} times")
            if link_name not in links:
                self.problem(f"{where}.interfaces", f"unknown link {shown(link_name)}")
            elif name not in links[link_name].ends:
                self.problem(f"{where}.interfaces", f"'{name}' is not an end of link '{link_name}'")
            else:
                link = links[link_name]
                address = ipaddress.IPv4Interface(f"{link.ends[name]}/{link.subnet.prefixlen}")
                interfaces.append(Interface(len(interfaces), link_name, address))
        for link_name in on:
            if link_name not in wanted:
                self.problem(f"{where}.interfaces", f"link '{link_name}' ends on this host but is not listed")
        if not on:
            self.problem(where, "is on no link")

        gateway = None
        if raw.get("gateway") is not None:
            try:
                gateway = ipaddress.IPv4Address(self.scalar(raw["gateway"]))
            except ValueError:
                self.problem(f"{where}.gateway", f"{shown(raw['gateway'])} is not an IPv4 address")
            else:
                if name in self.misaddressed:
                    pass
                elif not any(gateway in i.address.network for i in interfaces):
                    self.problem(f"{where}.gateway", f"{gateway} is on none of this host's links")
                elif any(gateway == i.address.ip for i in interfaces):
                    self.problem(f"{where}.gateway", f"{gateway} is this host's own address")

        platform = raw.get("platform")
        if platform is not None and platform not in self.known_platforms:
            self.problem(
                f"{where}.platform", f"{shown(platform)} is not one of {', '.join(self.known_platforms)}"
            )
            platform = None

        forwarding = raw.get("forwarding", False)
        if not isinstance(forwarding, bool):
            self.problem(f"{where}.forwarding", "must be true or false")
            forwarding = False

        ipsec = self.ipsec(f"{where}.ipsec", raw["ipsec"], interfaces) if "ipsec" in raw else None
        iked = raw.get("iked")
        if iked is not None:
            if not isinstance(iked, str) or not re.fullmatch(r"\d+\.\d+", iked):
                self.problem(f"{where}.iked", f'{shown(iked)}: expected a quoted version such as "7.4"')
                iked = None
            elif not ipsec:
                self.problem(f"{where}.iked", "only a gateway (a host with an ipsec section) runs iked")
        return Host(name, tuple(interfaces), gateway, forwarding, ipsec, platform, iked)

    def ipsec(self, where: str, raw: Any, interfaces: list[Interface]) -> Ipsec | None:
        raw = self.mapping(raw, where)
        if not raw:
            return None
        for key in raw:
            if key not in ("peer", "mode", "srcid", "protect"):
                self.problem(
                    f"{where}.{gate.key(key)}", "unknown field (expected peer, mode, srcid, protect)"
                )
        peer = raw.get("peer")
        if not peer:
            self.problem(f"{where}.peer", "missing: an IPsec gateway needs a peer")
        elif problem := gate.HOST.problem(peer):
            self.problem(f"{where}.peer", problem)
            peer = None
        mode = raw.get("mode", "active")
        if mode not in ("active", "passive"):
            self.problem(f"{where}.mode", f"{shown(mode)} is not one of active, passive")
            mode = "active"
        srcid = raw.get("srcid")
        if not srcid or not isinstance(srcid, str):
            self.problem(
                f"{where}.srcid", "missing: the gateway's identity (an FQDN such as init.example.com)"
            )
        elif problem := srcid_problem(srcid):
            self.problem(f"{where}.srcid", problem)
        protect = raw.get("protect")
        if protect not in [i.link for i in interfaces]:
            self.problem(f"{where}.protect", f"{shown(protect)} is not one of this host's links")
        return Ipsec(str(peer), mode, srcid if isinstance(srcid, str) else "", str(protect))

    def check_unique_addresses(self, links: dict[str, Link]) -> None:
        seen: dict[ipaddress.IPv4Address, str] = {}
        for link in links.values():
            for host, ip in link.ends.items():
                here = f"links.{link.name}.ends.{host}"
                if ip in seen:
                    self.problem(here, f"address {ip} is already used at {seen[ip]}")
                    self.misaddressed.add(host)
                seen[ip] = here
        subnets: dict[ipaddress.IPv4Network, str] = {}
        for link in links.values():
            for other, name in subnets.items():
                if link.subnet.overlaps(other):
                    self.problem(
                        f"links.{link.name}.subnet", f"{link.subnet} overlaps links.{name} ({other})"
                    )
            subnets[link.subnet] = link.name

    def check_ipsec(self, hosts: dict[str, Host]) -> None:
        srcids: dict[str, str] = {}
        for host in hosts.values():
            if not host.ipsec:
                continue
            if problem := gateway_name_problem(host.name):
                self.problem(f"hosts.{host.name}", problem)
            if host.ipsec.srcid in srcids:
                first = srcids[host.ipsec.srcid]
                self.problem(
                    f"hosts.{host.name}.ipsec.srcid",
                    f"'{host.ipsec.srcid}' is also {first}'s srcid: each gateway needs its own",
                )
            srcids.setdefault(host.ipsec.srcid, host.name)
        for host in hosts.values():
            if not host.ipsec or not host.ipsec.peer or host.ipsec.peer == "None":
                continue
            where = f"hosts.{host.name}.ipsec.peer"
            peer = hosts.get(host.ipsec.peer)
            if peer is None:
                self.problem(where, f"unknown host '{host.ipsec.peer}'")
            elif peer.name == host.name:
                self.problem(where, "a gateway cannot be its own peer")
            elif not peer.ipsec:
                self.problem(where, f"'{peer.name}' has no ipsec section: both gateways of a tunnel need one")
            elif peer.ipsec.peer != host.name:
                self.problem(where, f"'{peer.name}' names '{peer.ipsec.peer}' as its peer, not '{host.name}'")
            elif host.ipsec.mode == "passive" and peer.ipsec.mode == "passive":
                self.problem(
                    f"hosts.{host.name}.ipsec.mode",
                    f"both '{host.name}' and '{peer.name}' are passive: one must be active",
                )
            elif macro_name(peer.name) == macro_name(host.name) + "lan":
                # iked.conf names each gateway's address NAME and its protected subnet NAMElan.
                self.problem(
                    f"hosts.{host.name}",
                    f"'{host.name}' and its peer '{peer.name}' clash in iked.conf: macro "
                    f"'{macro_name(peer.name)}' would be both {host.name}'s subnet and {peer.name}'s address",
                )
