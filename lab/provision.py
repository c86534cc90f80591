"""From booted guests to the guide's tunnel: the provisioning plan (lab/plan.py) run over the consoles.

Each phase runs on all the hosts it concerns in parallel (one console each) and is timed; the order is the
plan's, the same on every platform, only the actions come from each host's dialect.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from lab.errors import ProvisionError, first_and_more
from lab.host import Host
from lab.ikedconf import name_lines
from lab.parallel import in_parallel
from lab.plan import KEYS, NETWORK, Options, Plan, rendered_ike_conf
from lab.progress import step
from lab.settings import SA_TIMEOUT
from lab.topology import Topology

IKED_OK = re.compile(r"configuration OK")


#: Files a gateway's IKE daemon needs that its image lacks (a local iked build): host -> guest path -> file.
DaemonFiles = Mapping[str, Mapping[str, Path]]
#: How files reach a running guest (Guests.deliver: its files channel).
Deliver = Callable[[Host, Mapping[str, Path]], None]


def provision(
    plan: Plan,
    hosts: dict[str, Host],
    tunnel: Callable[[list[Host]], object] | None = None,
    daemon_files: DaemonFiles | None = None,
    deliver: Deliver | None = None,
) -> None:
    """Run the plan on the booted guests: what the booted base holds (`provision_base`), then the daemon
    on top (`provision_daemon`)."""
    provision_base(plan, hosts)
    provision_daemon(plan, hosts, tunnel, daemon_files, deliver)


def provision_base(plan: Plan, hosts: dict[str, Host]) -> None:
    """What lies below the IKE daemon, all of it the lab's booted base (lab/base.py) may hold: each host's
    network, and each gateway's kernel made ready and key pair made, its public half given to the peer."""
    everyone = [hosts[name] for name in plan.hosts]
    gateways = [hosts[g.name] for g in plan.gateways]

    def run_phase(phase: str) -> Callable[[Host], None]:
        return lambda h: h.apply(list(plan.hosts[h.name].actions(phase)))

    with step("network: addresses, routes, forwarding"):
        in_parallel(everyone, run_phase(NETWORK))
    if not gateways:
        return
    with step("keys: made in each gateway, public halves exchanged"):
        in_parallel(gateways, run_phase(KEYS))
        exchange_keys(plan, gateways)


def provision_daemon(
    plan: Plan,
    hosts: dict[str, Host],
    tunnel: Callable[[list[Host]], object] | None = None,
    daemon_files: DaemonFiles | None = None,
    deliver: Deliver | None = None,
) -> None:
    """The IKE daemon on the gateways: its own files where the image lacks them (`daemon_files`, through
    `deliver`), its configuration, started passive side first, then the tunnel awaited — or, when given,
    `tunnel(gateways)` waits instead, e.g. for an expected iked error."""
    gateways = [hosts[g.name] for g in plan.gateways]
    if not gateways:
        return
    if daemon_files:
        assert deliver, "daemon files without a way to deliver them"
        with step(f"iked: local build put in place on {', '.join(sorted(daemon_files))}"):
            in_parallel([hosts[h] for h in daemon_files], lambda h: deliver(h, daemon_files[h.name]))
    with step("iked.conf: rendered, written, checked by iked -n"):
        in_parallel(gateways, lambda h: install_ike_conf(plan, h))
    with step("iked: started"):
        start_ike(gateways, plan)
    if tunnel is not None:
        with step("tunnel: waiting for what the run expects"):
            tunnel(gateways)
        return
    with step("tunnel: IKE SA ESTABLISHED with child SAs on both gateways"):
        wait_for_tunnel(gateways)


def exchange_keys(plan: Plan, gateways: list[Host]) -> None:
    """Give each gateway's public key (made by the plan's keys phase) to its peer.

    Only public keys cross, and only over the consoles: private keys never leave their guest.
    """
    public_keys: dict[str, str] = {}

    def read_key(h: Host) -> None:
        public_keys[h.name] = h.read_file(h.platform.public_key)

    def install_peer_key(h: Host) -> None:
        peer = plan.topology.peer_of(h.spec)
        h.write_file(plan.peer_key_path(h.name), public_keys[peer.name], 0o644)

    in_parallel(gateways, read_key)
    in_parallel(gateways, install_peer_key)


def install_ike_conf(plan: Plan, h: Host) -> None:
    conf = plan.hosts[h.name].ike_conf
    assert conf, f"{h.name} is not a gateway"
    write_ike_conf(h, conf.content, plan.options.ike_conf_sources.get(h.name))


def write_ike_conf(h: Host, text: str, source: str | None = None) -> None:
    """Write iked.conf (root only: iked refuses a group- or world-readable file) and have iked judge it;
    its complaints name `source` (the user's own file) and line when there is one."""
    h.write_file(h.platform.ike_conf, text, 0o600)
    verdict = h.run(h.platform.ike_check_command())
    if not IKED_OK.search(verdict.output):
        complaints = name_lines(verdict.output, h.platform.ike_conf, source or h.platform.ike_conf)
        first, others = first_and_more(complaints or [source or h.platform.ike_conf])
        raise ProvisionError(f"{h.name}: iked rejects {first}", details=others)


def start_ike(gateways: list[Host], plan: Plan | None = None, order: list[list[str]] | None = None) -> None:
    """Start iked on `gateways`, passive ones first (the plan's start order, or `order`: groups of names); a
    group starts only once every iked of the group before it is past its start-up (Host.wait_ike_started).

    Why: an iked still starting frees any half-open IKE SA when its start-up ends (OpenIKED's "sa_free:
    reload"), and OpenIKED 7.2 already answers IKE_SA_INIT before that. An active peer started too early
    loses its first exchange that way and tries again only after iked's 60 s initiator interval."""
    passive = [h for h in gateways if h.spec.ipsec and h.spec.ipsec.mode == "passive"]
    named = order or (plan.start_order() if plan else None)
    groups = [[h for h in gateways if h.name in names] for names in named] if named else None
    in_parallel(gateways, lambda h: h.mark_ike_log())  # what iked says from now on is about this start
    ordered = [g for g in groups or (passive, [h for h in gateways if h not in passive]) if g]
    for i, group in enumerate(ordered):
        in_parallel(group, lambda h: h.check(h.platform.ike_start_command()))
        if i < len(ordered) - 1:
            in_parallel(group, lambda h: h.wait_ike_started())


def stop_ike(gateways: list[Host]) -> None:
    in_parallel(gateways, lambda h: h.check(h.platform.ike_stop_command()))


def restart_tunnel(gateways: list[Host], timeout: float = SA_TIMEOUT) -> None:
    """Stop iked everywhere, start it again (passive side first) and wait for the tunnel."""
    stop_ike(gateways)
    start_ike(gateways)
    wait_for_tunnel(gateways, timeout)


def wait_for_tunnel(gateways: list[Host], timeout: float = SA_TIMEOUT) -> None:
    """Wait for the tunnel on every gateway; the first that fails (iked gave up, or time) ends every wait."""
    start = time.monotonic()
    failed = threading.Event()

    def wait(h: Host) -> None:
        try:
            h.wait_established(max(1.0, timeout - (time.monotonic() - start)), stop=failed)
        except BaseException:
            failed.set()
            raise

    in_parallel(gateways, wait)


__all__ = [
    "Options",  # the plan's, here too: scenarios and callers change a lab through provision's Options
    "exchange_keys",
    "install_ike_conf",
    "provision",
    "provision_base",
    "provision_daemon",
    "rendered_ike_conf",
    "restart_tunnel",
    "start_ike",
    "stop_ike",
    "wait_for_tunnel",
    "write_ike_conf",
]


def tunnel_probe(topology: Topology) -> tuple[str, str] | None:
    """A ping that must cross the tunnel: (a host on the first gateway's protected link, the address of a
    host on its peer's); None when the topology has no such pair."""
    for gateway in topology.gateways:
        peer = topology.peer_of(gateway)
        assert gateway.ipsec and peer.ipsec
        near = topology.links[gateway.ipsec.protect].other_end(gateway.name)
        far_link = topology.links[peer.ipsec.protect]
        far = far_link.other_end(peer.name)
        if near != gateway.name and far != peer.name:
            return near, str(far_link.ends[far])
    return None
