"""Which platform each host of a topology runs on: a topology file read against the registry's platforms
(lab/topology.py knows none), and each host's Platform object resolved once."""

from __future__ import annotations

from pathlib import Path

from lab import topology as topo
from lab.platforms import Platform, get_platform, platform_names
from lab.topology import Topology


def load_topology(path: Path | str | None = None) -> Topology:
    """A topology file (the guide's lab when None) whose hosts may name any registered platform."""
    return topo.load(path, platform_names())


def parse_topology(text: str, path: Path) -> Topology:
    """A topology's text, checked as a file at `path` would be (`path` only names it in messages)."""
    return topo.parse(text, path, platform_names())


def resolve_platforms(topology: Topology, default: str) -> dict[str, Platform]:
    """Each host's platform object, resolved once: the topology's choice, else `default`."""
    by_name: dict[str, Platform] = {}
    for host in topology.hosts.values():
        name = host.platform or default
        by_name[name] = by_name.get(name) or get_platform(name)
    return {host.name: by_name[host.platform or default] for host in topology.hosts.values()}
