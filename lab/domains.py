"""What each guest of a lab is to libvirt, decided before anything is created: its boot media (the image
its platform boots, with the IKE daemon its gateway runs), its NICs wired link to link over UDP ports on
127.0.0.1, its serial log and disk overlay in the run folder. Pure: nothing here talks to libvirt."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lab import qemu_files
from lab.errors import LabError
from lab.hypervisor import DomainSpec, Nic, lab_ports, mac_address
from lab.platforms import BootMedia, DaemonChoice, Platform
from lab.topology import Topology

#: Each link's two ends as (host, local UDP port); the other end's port is the remote one.
Wires = dict[str, list[tuple[str, int]]]


def wires(lab: str, topology: Topology) -> Wires:
    """Every link of `topology` given two of lab `lab`'s UDP ports, one per end."""
    ports = iter(lab_ports(lab))
    return {link.name: [(host, next(ports)) for host in link.ends] for link in topology.links.values()}


def domain_specs(
    lab: str,
    run_dir: Path,
    topology: Topology,
    platforms: dict[str, Platform],
    accel: str,
    media: dict[str, BootMedia],
    wired: Wires,
) -> list[DomainSpec]:
    """One domain per host, in the topology's order."""
    specs = []
    for host in topology.hosts.values():
        nics = []
        for iface in host.interfaces:
            ends = wired[iface.link]
            local = next(p for h, p in ends if h == host.name)
            remote = next(p for h, p in ends if h != host.name)
            nics.append(Nic(mac_address(lab, host.name, iface.index), local, remote))
        platform = platforms[host.name]
        specs.append(domain_spec(lab, run_dir, host.name, platform, accel, media[host.name], tuple(nics)))
    return specs


def domain_spec(
    lab: str,
    run_dir: Path,
    host: str,
    platform: Platform,
    accel: str,
    media: BootMedia,
    nics: tuple[Nic, ...],
) -> DomainSpec:
    spec = DomainSpec(
        lab=lab,
        host=host,
        platform=platform.name,
        accel=accel,
        nics=nics,
        serial_log=run_dir / "serial" / f"{host}.log",
        memory_mib=platform.memory_mib,
    )
    if platform.facts.boot == "kernel":
        return dataclasses.replace(
            spec, kernel=media.kernel, initrd=media.initrd, cmdline=platform.kernel_cmdline(media, host)
        )
    assert media.disk, f"{platform.name} boots from a disk but its boot media has none"
    overlay = qemu_files.overlay(lab, run_dir, host)  # made by Hypervisor.create, kept with a snapshot
    return dataclasses.replace(spec, disk=overlay, backing=media.disk)


def host_media(
    topology: Topology, platforms: dict[str, Platform], release: str | None, iked: dict[str, DaemonChoice]
) -> dict[str, BootMedia]:
    """Each host's boot media: its platform's, with the iked its gateway runs (the topology's `iked:`
    version unless `iked` overrides it). Each distinct image is found or built once."""
    for name in iked:
        if name not in topology.hosts or not topology.hosts[name].ipsec:
            gateways = ", ".join(g.name for g in topology.gateways)
            raise LabError(f"iked for '{name}': not a gateway of {topology.path.name} (gateways: {gateways})")
    built: dict[tuple[str, DaemonChoice], BootMedia] = {}
    media = {}
    for host in topology.hosts.values():
        platform = platforms[host.name]
        choice = iked.get(host.name, DaemonChoice())
        if choice.version is None and host.iked:
            choice = dataclasses.replace(choice, version=host.iked)
        if choice != DaemonChoice():
            platform.check_daemon_choice(host.name, choice)
        key = (platform.name, choice)
        if key not in built:
            built[key] = platform.boot_media(release, choice)
        media[host.name] = built[key]
    return media
