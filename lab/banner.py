"""The login banner (/etc/motd) of every guest: who this host is in the guide, its addresses, and the five
commands that matter on it, in its platform's spelling. Rendered from the topology; provisioning writes it,
the appliance's shell prints it when it starts, and `ikedlab console` shows it on connecting."""

from __future__ import annotations

from dataclasses import dataclass

from lab.platforms import FileSpec, Platform
from lab.render import template
from lab.topology import Host, Topology

MOTD = "/etc/motd"


@dataclass(frozen=True)
class Command:
    command: str
    what: str


def role(topology: Topology, host: Host) -> str:
    """Who this host is in the guide, in a line."""
    if host.ipsec:
        side = "initiator" if host.ipsec.mode == "active" else "responder"
        lan = topology.protected_subnet(host)
        return f"the guide's {side} gateway (iked {host.ipsec.mode}, srcid {host.ipsec.srcid}) for {lan}"
    gateway = _gateway_of(topology, host)
    if gateway:
        return f"a host on {topology.protected_subnet(gateway)}, behind gateway {gateway.name}"
    if host.forwarding:
        return "the Internet between the two gateways (a router the lab adds to the guide's four hosts)"
    return "a host of the lab"


def _gateway_of(topology: Topology, host: Host) -> Host | None:
    """The IPsec gateway whose protected network this host sits on."""
    for gateway in topology.gateways:
        if gateway is not host and any(
            i.address.ip in topology.protected_subnet(gateway) for i in host.interfaces
        ):
            return gateway
    return None


def far_host(topology: Topology, host: Host) -> str | None:
    """An address across the tunnel from this host: a host on the peer gateway's network."""
    gateway = host if host.ipsec else _gateway_of(topology, host)
    if gateway is None:
        return None
    peer = topology.peer_of(gateway)
    far = topology.protected_subnet(peer)
    for other in topology.hosts.values():
        if other is not peer:
            for iface in other.interfaces:
                if iface.address.ip in far:
                    return str(iface.address.ip)
    return str(peer.interface_on(peer.ipsec.protect).address.ip) if peer.ipsec else None


def commands(topology: Topology, host: Host, platform: Platform) -> list[Command]:
    """The five commands that matter on this host, filled in from the topology."""
    if host.ipsec:
        kind = "gateway"
    elif _gateway_of(topology, host):
        kind = "lan"
    else:
        kind = "router"
    values = {
        "far": far_host(topology, host) or "10.0.2.2",
        "uplink": platform.interface_name(host.uplink.index),
        "peer": str(topology.peer_of(host).uplink.address.ip) if host.ipsec else "",
        "gateway1": str(topology.gateways[0].uplink.address.ip) if topology.gateways else "",
    }
    return [Command(c.format(**values), w) for c, w in platform.facts.banner.get(kind, ())]


def motd(topology: Topology, host: Host, platform: Platform) -> str:
    cmds = commands(topology, host, platform)
    addresses = [
        f"{platform.interface_name(i.index):6} {str(i.address):18} on {i.link} "
        f"(to {topology.links[i.link].other_end(host.name)})"
        for i in host.interfaces
    ]
    tunnel = ""
    if host.ipsec:
        peer = topology.peer_of(host)
        tunnel = (
            f"{topology.protected_subnet(host)} <-> {topology.protected_subnet(peer)} "
            f"with {peer.name} ({peer.uplink.address.ip})"
        )
    return template("motd.j2").render(
        rule="-" * 78,
        host=host,
        role=role(topology, host),
        addresses=addresses,
        tunnel=tunnel,
        platform=platform.name,
        spelled_differently=platform.facts.guide_spellings,
        commands=cmds,
        width=max((len(c.command) for c in cmds), default=0),
        log=platform.facts.iked_log if host.ipsec else "",
    )


def motd_file(topology: Topology, host: Host, platform: Platform) -> FileSpec:
    return FileSpec(MOTD, motd(topology, host, platform), 0o644)
