"""The lab as a picture: hosts, links, addresses, and each IPsec tunnel with its state. graphviz draws it
(SVG or PNG, from DOT rendered by lab/templates/lab.dot.j2); the terminal gets the same as text.

`ikedlab graph` reads the tunnels' state from a running lab (as `status` does); without one, the picture
is the topology with its tunnels "not running". lab.report draws its run's lab with `topology_svg`.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from lab.command import run
from lab.errors import IkedlabError
from lab.topology import Host, Topology

FORMATS = ("svg", "png", "dot")
NOT_RUNNING = "not running"


def dot_id(value: object) -> Markup:
    """A value as a DOT quoted string. graphviz's lexer knows one escape in quoted strings, \\" (and keeps
    \\\\ as a pair: a trailing backslash cannot eat the closing quote); control characters become spaces."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(value)).replace("\\", "\\\\").replace('"', '\\"')
    return Markup(f'"{text}"')


#: DOT with HTML-like labels: autoescape makes every value plain text inside <…>, dot_id quotes the IDs.
_DOT = jinja2.Environment(
    loader=jinja2.PackageLoader("lab", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_DOT.filters["dot_id"] = dot_id


@dataclass(frozen=True)
class Tunnel:
    a: str  # the gateways, in topology order
    b: str
    a_lan: str
    b_lan: str
    state: str  # "ESTABLISHED", "down", NOT_RUNNING

    @property
    def color(self) -> str:
        return {"ESTABLISHED": "#1a7f37", NOT_RUNNING: "#777777"}.get(self.state, "#cf222e")


def tunnels(topology: Topology, states: dict[str, str] | None = None) -> list[Tunnel]:
    """Each pair of peer gateways once; `states` (gateway -> its reading) decides the state shown."""
    found: list[Tunnel] = []
    seen: set[frozenset[str]] = set()
    order = list(topology.hosts)
    for gateway in topology.gateways:
        peer = topology.peer_of(gateway)
        pair = frozenset((gateway.name, peer.name))
        if pair in seen:
            continue
        seen.add(pair)
        a, b = sorted((gateway, peer), key=lambda h: order.index(h.name))
        if states is None:
            state = NOT_RUNNING
        else:
            both = {states.get(a.name, "down"), states.get(b.name, "down")}
            state = "ESTABLISHED" if both == {"ESTABLISHED"} else "down"
        found.append(
            Tunnel(
                a.name, b.name, str(topology.protected_subnet(a)), str(topology.protected_subnet(b)), state
            )
        )
    return found


@dataclass(frozen=True)
class LabView:
    """What a picture shows: the topology, the lab's name, each host's platform and interface prefix
    (eth, vio), and each gateway's tunnel reading (None: the lab is not running)."""

    topology: Topology
    name: str = "ikedlab"
    platforms: dict[str, str] = field(default_factory=dict)
    interface_prefixes: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] | None = None

    def parts(self) -> tuple[Topology, str, dict[str, str], dict[str, str], dict[str, str] | None]:
        return self.topology, self.name, self.platforms, self.interface_prefixes, self.states


def chain_order(topology: Topology) -> list[str]:
    """Hosts in the order a walk along the links meets them, starting at an end of the chain."""
    degree = {name: 0 for name in topology.hosts}
    for link in topology.links.values():
        for end in link.ends:
            degree[end] += 1
    start = min(topology.hosts, key=lambda n: (degree[n], list(topology.hosts).index(n)))
    order, todo = [], [start]
    while todo:
        name = todo.pop(0)
        if name in order:
            continue
        order.append(name)
        todo += [lk.other_end(name) for lk in topology.links.values() if name in lk.ends]
    return order + [n for n in topology.hosts if n not in order]


def _role(host: Host) -> str:
    if host.ipsec:
        return f"IPsec gateway, {host.ipsec.mode}"
    return "router" if host.forwarding else "host"


def _interface(host: Host, link: str, prefixes: dict[str, str]) -> str:
    iface = host.interface_on(link)
    return f"{prefixes.get(host.name, 'if')}{iface.index}"


def dot_source(lab: LabView) -> str:
    """The lab in graphviz's DOT language."""
    topology, name, platforms, prefixes, states = lab.parts()
    order = chain_order(topology)
    hosts = [
        {
            "name": h,
            "role": _role(topology.hosts[h]),
            "platform": platforms.get(h, ""),
            "gateway": bool(topology.hosts[h].ipsec),
            "router": topology.hosts[h].forwarding and not topology.hosts[h].ipsec,
            "addresses": [
                f"{prefixes.get(h, 'if')}{i.index} {i.address}" for i in topology.hosts[h].interfaces
            ],
        }
        for h in order
    ]
    links = []
    for link in topology.links.values():
        a, b = sorted(link.ends, key=order.index)
        links.append(
            {
                "name": link.name,
                "subnet": str(link.subnet),
                "a": a,
                "b": b,
            }
        )
    title = Markup("lab <b>{}</b>: {} hosts, {} links").format(name, len(hosts), len(links))
    return _DOT.get_template("lab.dot.j2").render(
        name=name, title=title, hosts=hosts, links=links, tunnels=tunnels(topology, states)
    )


def draw(dot: str, fmt: str) -> bytes:
    """Run graphviz's `dot` on DOT text; `fmt` svg or png."""
    if fmt == "dot":
        return dot.encode()
    if fmt not in FORMATS:
        raise IkedlabError(f"graph: cannot draw .{fmt} (formats: {', '.join(FORMATS)})")
    binary = shutil.which("dot")
    if binary is None:
        raise IkedlabError(
            "graph: graphviz's `dot` is not installed",
            "apt-get install graphviz (scripts/setup-host.sh does)",
        )
    return run([binary, f"-T{fmt}"], input=dot.encode(), timeout=60).stdout


def write(dot: str, out: Path) -> Path:
    fmt = out.suffix.lstrip(".").lower()
    data = draw(dot, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def topology_svg(topology: Topology) -> str:
    """The topology as an SVG document (no state): lab.report's picture of a run's lab."""
    return draw(dot_source(LabView(topology)), "svg").decode()


def text(lab: LabView) -> str:
    """The same picture for a terminal: hosts top to bottom in link order, each link with the addresses at
    its two ends, each gateway with its tunnel and the tunnel's state."""
    topology, name, platforms, prefixes, states = lab.parts()
    order = chain_order(topology)
    found = tunnels(topology, states)
    lines = [f"lab {name}"]
    for i, h in enumerate(order):
        host = topology.hosts[h]
        platform = f" ({platforms[h]})" if h in platforms else ""
        tunnel = next((t for t in found if h in (t.a, t.b)), None)
        mark = ""
        if tunnel:
            peer = tunnel.b if tunnel.a == h else tunnel.a
            mark = f"   <== IPsec tunnel to {peer}: {tunnel.state}"
        lines.append(f"{h}{platform}: {_role(host)}{mark}")
        nxt = order[i + 1] if i + 1 < len(order) else None
        link = next((lk for lk in topology.links.values() if nxt and set(lk.ends) == {h, nxt}), None)
        if link and nxt:
            here = f"{_interface(host, link.name, prefixes)} {link.ends[h]}"
            there = f"{_interface(topology.hosts[nxt], link.name, prefixes)} {link.ends[nxt]}"
            width = max(len(here), len(there))
            lines.append(f"    {here.ljust(width)} ┐")
            lines.append(f"    {''.ljust(width)} │ {link.name} {link.subnet}")
            lines.append(f"    {there.ljust(width)} ┘")
    for t in found:
        lines.append(f"tunnel {t.a} <=> {t.b}: {t.a_lan} <=> {t.b_lan}, {t.state}")
    return "\n".join(lines) + "\n"
