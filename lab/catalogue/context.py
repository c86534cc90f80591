"""What a case sees of the lab: each host's name, addresses, the network a gateway protects, its id, its side
in openiked's regress (left/right), the case's secrets; and the IPv6 plan a case can ask for.

Templates get `me` and `peer` (the gateway being configured and its peer), every host by name (`init`,
`resp`, `inet`, …), `hosts`, `secrets` and `case`. Steps name addresses as `HOST`, `HOST.lan`,
`HOST.address6`, `HOST.lan6` or literals (lab.catalogue.steps); `resolve` turns those into addresses.

The IPv6 plan (`setup: {ipv6: true}`) follows the IPv4 one: link number k of the topology (in its order,
from 1) gets 2001:db8:k::/64, and each host on it the address whose last group is the last number of its IPv4
address there (init's 192.0.2.1 on wan1, the guide's second link, is 2001:db8:2::1).
A host with an IPv4 default route gets the IPv6 one through the same neighbour.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from lab.topology import Topology

#: openiked's regress calls its two machines left and right: left is the guide's init, right its resp.
SIDES = {"init": "left", "resp": "right"}
IPV6_PREFIX = "2001:db8"
IPV6_PREFIX_LENGTH = 64


@dataclass(frozen=True)
class Ipv6Address:
    link: str
    interface_index: int
    address: ipaddress.IPv6Interface


@dataclass(frozen=True)
class HostIpv6:
    """A host's part of the IPv6 plan: an address on each link, and its default route."""

    addresses: tuple[Ipv6Address, ...]
    gateway: ipaddress.IPv6Address | None
    forwarding: bool


def ipv6_plan(topology: Topology) -> dict[str, HostIpv6]:
    address: dict[tuple[str, str], ipaddress.IPv6Interface] = {}
    for k, link in enumerate(topology.links.values(), start=1):
        for end, v4 in link.ends.items():
            last = str(v4).rsplit(".", 1)[1]
            address[(end, link.name)] = ipaddress.IPv6Interface(
                f"{IPV6_PREFIX}:{k}::{last}/{IPV6_PREFIX_LENGTH}"
            )
    plan: dict[str, HostIpv6] = {}
    for host in topology.hosts.values():
        gateway6 = None
        if host.gateway is not None:
            uplink = host.uplink.link
            neighbour = next(h for h, a in topology.links[uplink].ends.items() if a == host.gateway)
            gateway6 = address[(neighbour, uplink)].ip
        plan[host.name] = HostIpv6(
            tuple(Ipv6Address(i.link, i.index, address[(host.name, i.link)]) for i in host.interfaces),
            gateway6,
            host.forwarding,
        )
    return plan


@dataclass(frozen=True)
class HostView:
    """One host as templates and steps name it."""

    name: str
    address: str  # a gateway's public address, another host's first
    lan: str = ""  # the network a gateway protects
    address6: str = ""
    lan6: str = ""
    srcid: str = ""  # the topology's id of a gateway
    side: str = ""  # left / right: openiked's regress names for init / resp
    mode: str = ""  # active / passive, as the topology has it
    platform: str = ""

    def __str__(self) -> str:  # `{{ init }}` in a template is its address
        return self.address


@dataclass(frozen=True)
class CaseContext:
    hosts: dict[str, HostView]
    secrets: dict[str, str] = field(default_factory=dict)
    case: str = ""

    def resolve(self, expression: str) -> str:
        """An address expression (see lab.catalogue.steps) as an address or a network, in text."""
        host, _, suffix = expression.partition(".")
        if host in self.hosts and (not suffix or suffix in ("lan", "address6", "lan6")):
            value = getattr(self.hosts[host], suffix or "address")
            if not value:
                what = (
                    "an IPv6 address (setup: {ipv6: true})" if "6" in suffix else f"a {suffix or 'address'}"
                )
                raise ValueError(f"{expression}: {host} has no {what}")
            return str(value)
        return expression

    def network(self, expression: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.resolve(expression), strict=False)

    def template_vars(self, gateway: str, peer: str) -> dict[str, Any]:
        return {
            **self.hosts,
            "hosts": self.hosts,
            "me": self.hosts[gateway],
            "peer": self.hosts[peer],
            "secrets": self.secrets,
            "case": self.case,
        }


def lab_context(
    topology: Topology,
    platforms: dict[str, str],
    secrets: dict[str, str] | None = None,
    case: str = "",
    ipv6: bool = False,
) -> CaseContext:
    """The context of a case on a lab of `topology` (host -> platform name in `platforms`)."""
    plan = ipv6_plan(topology) if ipv6 else {}
    views = {}
    for host in topology.hosts.values():
        six = plan.get(host.name)
        uplink6 = ""
        if six:
            uplink6 = str(next(a.address.ip for a in six.addresses if a.link == host.uplink.link))
        lan = lan6 = ""
        if host.ipsec:
            lan = str(topology.protected_subnet(host))
            if six:
                lan6 = str(next(a.address.network for a in six.addresses if a.link == host.ipsec.protect))
        views[host.name] = HostView(
            name=host.name,
            address=str(host.uplink.address.ip),
            lan=lan,
            address6=uplink6,
            lan6=lan6,
            srcid=host.ipsec.srcid if host.ipsec else "",
            side=SIDES.get(host.name, host.name),
            mode=host.ipsec.mode if host.ipsec else "",
            platform=platforms.get(host.name, ""),
        )
    return CaseContext(views, dict(secrets or {}), case)
