"""The provisioning plan: every host's files and commands, in order, built once from a topology, each host's
platform and the lab's Options.

Three things consume it and so cannot drift apart: `provision()` runs it over the serial consoles,
`ikedlab render` writes it out (OUT/HOST/files/... and OUT/HOST/provision.sh, phase by phase), and the
Vagrantfile runs that render and reads lab.json, made from the same plan. What is not in a host's own steps
is what crosses between guests: each gateway's public key (made in the guest, so it cannot be rendered) goes
to its peer, then iked starts, passive side first (`Plan.start_order`).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab import redact, render
from lab.banner import motd_file
from lab.ikedconf import IkedJudge, judge_user_confs, read_user_confs
from lab.placement import load_topology, resolve_platforms
from lab.platforms import Action, FileSpec, Platform
from lab.topology import Host, Topology

#: A host's phases, in the order every platform runs them. Gateways have all three, other hosts the first.
NETWORK, KEYS, IKE_CONF = "network", "keys", "ike-config"
PHASES = (NETWORK, KEYS, IKE_CONF)


@dataclass(frozen=True)
class Options:
    """What a lab may change about the guide's provisioning."""

    peer_any: tuple[str, ...] = ()  # gateways that accept their peer from any address (NAT in between)
    proposals: render.Proposals | None = None
    ike_conf: dict[str, str] = field(default_factory=dict)  # host -> a user's own iked.conf text
    ike_conf_sources: dict[str, str] = field(default_factory=dict)  # host -> that file's path, for messages
    dpd_interval: int | None = None  # seconds between liveness checks (iked's default when None)
    lifetimes: render.Lifetimes | None = None  # short SA lifetimes: iked rekeys during a scenario


@dataclass(frozen=True)
class HostPlan:
    spec: Host
    platform: Platform
    steps: dict[str, tuple[Action, ...]]  # phase -> its actions, in PHASES order

    @property
    def name(self) -> str:
        return self.spec.name

    def actions(self, phase: str | None = None) -> tuple[Action, ...]:
        """One phase's actions, or all of them in order."""
        if phase is not None:
            return self.steps.get(phase, ())
        return tuple(a for p in PHASES for a in self.steps.get(p, ()))

    @property
    def ike_conf(self) -> FileSpec | None:
        files = [a for a in self.steps.get(IKE_CONF, ()) if isinstance(a, FileSpec)]
        return files[0] if files else None


@dataclass(frozen=True)
class Plan:
    topology: Topology
    options: Options
    hosts: dict[str, HostPlan]

    @property
    def gateways(self) -> list[HostPlan]:
        return [self.hosts[g.name] for g in self.topology.gateways]

    def start_order(self) -> list[list[str]]:
        """Gateways in the groups iked starts in: passive ones first, so an active one's first IKE_SA_INIT
        finds its peer listening and needs no retransmission."""
        gateways = self.topology.gateways
        passive = [g.name for g in gateways if g.ipsec and g.ipsec.mode == "passive"]
        return [group for group in (passive, [g.name for g in gateways if g.name not in passive]) if group]

    def peer_key_path(self, host: str) -> str:
        """Where gateway `host` keeps its peer's public key (named after the peer's srcid)."""
        peer = self.topology.peer_of(self.topology.host(host))
        assert peer.ipsec
        return self.hosts[host].platform.peer_pubkey_path(peer.ipsec.srcid)


def with_user_confs(options: Options, files: Mapping[str, Path], topology: Topology) -> Options:
    """`options` with the users' own iked.conf files (host -> file), read and checked against the topology
    before anything is built or boots; `judged` has them judged by iked (lab.ikedconf)."""
    if not files:
        return options
    texts = read_user_confs(dict(files), [g.name for g in topology.gateways], topology.path.name)
    return dataclasses.replace(
        options,
        ike_conf={**options.ike_conf, **texts},
        ike_conf_sources={**options.ike_conf_sources, **{h: str(p) for h, p in files.items()}},
    )


def judged(options: Options, judges: Mapping[str, IkedJudge | None] | None = None) -> None:
    """The users' own iked.conf files of `options` judged by the iked each gateway will run (`judges`, host ->
    judge, from the boot media), or by the host's iked when no media are known (`ikedlab render`)."""
    users = {h: options.ike_conf[h] for h in options.ike_conf_sources if h in options.ike_conf}
    if users:
        judge_user_confs(users, options.ike_conf_sources, judges)


def rendered_ike_conf(
    topology: Topology, platforms: Mapping[str, Platform], host_name: str, options: Options
) -> str:
    """A gateway's iked.conf: the user's own when given, else the guide's shaped by the options."""
    if host_name in options.ike_conf:
        return options.ike_conf[host_name]
    host = topology.host(host_name)
    platform = platforms[host_name]
    names = {h: p.name for h, p in platforms.items()}
    return platform.render_ike_conf(  # the gateway's own daemon's: iked.conf, swanctl.conf, ipsec.conf
        topology,
        host,
        peer_any=host_name in options.peer_any,
        proposals=options.proposals or render.proposals_for(topology, names, host),
        dpd_interval=options.dpd_interval,
        lifetimes=options.lifetimes,
    )


def build_plan(topology: Topology, platforms: Mapping[str, Platform], options: Options = Options()) -> Plan:
    """The plan for every host of `topology`, each on its platform (host -> Platform)."""
    hosts: dict[str, HostPlan] = {}
    for host in topology.hosts.values():
        platform = platforms[host.name]
        # The login banner rides with the network phase: who the host is in the guide, its commands.
        network = (*platform.network_actions(host), motd_file(topology, host, platform))
        steps: dict[str, tuple[Action, ...]] = {NETWORK: network}
        if host.ipsec:
            steps[KEYS] = (*platform.ipsec_prepare_actions(host), platform.keygen_command())
            # Root only: iked refuses a group- or world-readable iked.conf.
            conf = rendered_ike_conf(topology, platforms, host.name, options)
            steps[IKE_CONF] = (FileSpec(platform.ike_conf, conf, 0o600),)
        hosts[host.name] = HostPlan(host, platform, steps)
    # Every pre-shared key a planned file names (a user's iked.conf, a case's template) is the running lab's
    # secret from here on: nothing ikedlab writes will hold it (lab/redact.py).
    for planned in hosts.values():
        for action in planned.actions():
            if isinstance(action, FileSpec):
                redact.register_config(action.content)
    return Plan(topology, options, hosts)


def write_plan(plan: Plan, out: Path) -> list[Path]:
    """Write, per host, every file the plan installs and the commands it runs, under out/HOST/.

    out/HOST/files/ mirrors the guest's filesystem (etc/iked.conf, etc/hostname.vio0, ...) and
    out/HOST/provision.sh holds the commands, phase by phase in the plan's order. Public keys are made in
    each guest, so the key exchange is left to whoever applies these files (the Vagrantfile copies local.pub
    across, then starts iked in `start_order`).
    """
    written: list[Path] = []
    for host in plan.hosts.values():
        root = out / host.name
        commands = [
            "#!/bin/sh",
            f"# {host.name} ({host.platform.name}): rendered by `ikedlab render`",
            "set -e",
        ]
        for phase in PHASES:
            if phase in host.steps:
                commands.append(f"# --- {phase}")
            for action in host.actions(phase):
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


def render_lab(
    topology_path: Path | None,
    platform: str,
    out: Path,
    *,
    options: Options = Options(),
    ike_conf_files: Mapping[str, Path] | None = None,
    leading_nics: int = 0,
) -> list[Path]:
    """`ikedlab render`: the plan for a topology file, written under `out` (see write_plan).

    `platform` is for hosts whose topology names none; `ike_conf_files` are users' own iked.conf files
    (host -> file); `leading_nics` counts NICs the machine puts before the lab's own (Vagrant's management
    NIC), which shift the lab's interface names."""
    topology = load_topology(topology_path)
    options = with_user_confs(options, ike_conf_files or {}, topology)
    judged(options)  # by this host's iked: render boots nothing, so no image's iked is at hand
    platforms = {
        name: p.with_leading_nics(leading_nics) for name, p in resolve_platforms(topology, platform).items()
    }
    return write_plan(build_plan(topology, platforms, options), out)
