"""Every file ikedlab generates for a guest, from jinja2 templates: iked.conf today.

The engine, `ikedlab render` and the Vagrantfile all take their files from here, so they cannot drift.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2

from lab.ikedconf import macro_name
from lab.topology import Host, Topology

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("lab", "templates"),
    autoescape=False,  # plain-text configuration files
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Proposals:
    """Explicit IKE and child SA transforms, for labs whose two platforms must agree on something.

    The defaults are what both OpenBSD's iked and OpenIKED portable on Linux can do: no AES-GCM for ESP
    (PF_KEY on Linux cannot install it) and no hmac-sha2-256 for ESP (OpenIKED portable excludes it there).
    """

    ike_enc: str = "aes-256"
    ike_auth: str = "hmac-sha2-256"
    ike_prf: str = "hmac-sha2-256"
    group: str = "ecp256"
    child_enc: str = "aes-256"
    child_auth: str = "hmac-sha2-512"


@dataclass(frozen=True)
class _Side:
    name: str
    macro: str
    address: str
    lan: str
    mode: str
    srcid: str


def _side(topology: Topology, host: Host) -> _Side:
    assert host.ipsec
    return _Side(
        name=host.name,
        macro=macro_name(host.name),
        address=str(host.uplink.address.ip),
        lan=str(topology.protected_subnet(host)),
        mode=host.ipsec.mode,
        srcid=host.ipsec.srcid,
    )


def proposals_for(topology: Topology, platforms: dict[str, str], host: Host) -> Proposals | None:
    """Explicit proposals when a gateway and its peer run different platforms (a mixed lab); else None,
    and each iked keeps its own defaults as the guide does."""
    peer = topology.peer_of(host)
    return Proposals() if platforms[host.name] != platforms[peer.name] else None


def iked_conf(
    topology: Topology,
    host: Host,
    *,
    peer_any: bool = False,
    proposals: Proposals | None = None,
    dpd_interval: int | None = None,
) -> str:
    """The gateway's iked.conf: macros, then one policy with the guide's two flows, mirrored on the peer."""
    peer = topology.peer_of(host)
    return _env.get_template("iked.conf.j2").render(
        me=_side(topology, host),
        peer=_side(topology, peer),
        peer_any=peer_any,
        proposals=proposals,
        dpd_interval=dpd_interval,
    )


def render_lab(topology_path: Path | None, platform: str, out: Path, leading_nics: int = 0) -> list[Path]:
    """Write, per host, every file provisioning installs and the commands it runs, under out/HOST/.

    out/HOST/files/ mirrors the guest's filesystem (etc/iked.conf, etc/hostname.vio0, ...) and
    out/HOST/provision.sh holds the commands, in provisioning's order. Public keys are made in each guest,
    so the key exchange is left to whoever applies these files (the Vagrantfile copies local.pub across).
    `leading_nics`: NICs the machine puts before the lab's own (Vagrant's management NIC), which shift the
    lab's interface names.
    """
    from lab.platforms import FileSpec, get_platform, load_topology

    topology = load_topology(topology_path)
    platforms = {h.name: h.platform or platform for h in topology.hosts.values()}
    written: list[Path] = []
    for host in topology.hosts.values():
        dialect = get_platform(platforms[host.name]).with_leading_nics(leading_nics)
        actions = list(dialect.network_actions(host))
        if host.ipsec:
            actions += dialect.ipsec_prepare_actions(host)
            actions.append(dialect.keygen_command())
            proposals = proposals_for(topology, platforms, host)
            actions.append(FileSpec(dialect.iked_conf, iked_conf(topology, host, proposals=proposals), 0o600))
        root = out / host.name
        commands = ["#!/bin/sh", f"# {host.name} ({dialect.name}): rendered by `ikedlab render`", "set -e"]
        for action in actions:
            if isinstance(action, FileSpec):
                target = root / "files" / action.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(action.content)
                written.append(target)
                # Paths are validated words (a peer's srcid names its key file); quoted all the same.
                source = f'"$(dirname "$0")/files{action.path}"'
                commands.append(f"install -m {action.mode:o} {source} {shlex.quote(action.path)}")
            else:
                commands.append(action)
        root.mkdir(parents=True, exist_ok=True)
        script = root / "provision.sh"
        script.write_text("\n".join(commands) + "\n")
        script.chmod(0o755)
        written.append(script)
    return written
