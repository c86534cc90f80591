"""From booted guests to the guide's tunnel: addresses and routes, keys exchanged, iked.conf, iked, SAs up.

Each phase runs on all the hosts it concerns in parallel (one console each) and is timed; the order is the
same on every platform, only the actions come from each host's dialect.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from lab import render
from lab.errors import IkedlabError, ProvisionError
from lab.host import Host
from lab.ikedconf import name_lines
from lab.progress import step
from lab.settings import SA_TIMEOUT
from lab.topology import Topology

IKED_OK = re.compile(r"configuration OK")


@dataclass(frozen=True)
class Options:
    """What a lab may change about the guide's provisioning."""

    peer_any: tuple[str, ...] = ()  # gateways that accept their peer from any address (NAT in between)
    proposals: render.Proposals | None = None
    iked_conf: dict[str, str] = field(default_factory=dict)  # host -> a user's own iked.conf text
    iked_conf_sources: dict[str, str] = field(default_factory=dict)  # host -> that file's path, for messages
    dpd_interval: int | None = None  # seconds between liveness checks (iked's default when None)
    platforms: dict[str, str] = field(default_factory=dict)  # host -> platform, as the lab resolved them


def in_parallel(hosts: Iterable[Host], action: Callable[[Host], object]) -> None:
    """Run `action` on each host at once; raise the first failure (naming its host) after all finish."""
    hosts = list(hosts)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = [(h, pool.submit(action, h)) for h in hosts]
    errors = [(h, f.exception()) for h, f in futures if f.exception()]
    if errors:
        host, error = errors[0]
        if isinstance(error, IkedlabError):
            raise error
        raise ProvisionError(f"{host.name}: {type(error).__name__}: {error}") from error


def rendered_iked_conf(topology: Topology, host_name: str, options: Options) -> str:
    if host_name in options.iked_conf:
        return options.iked_conf[host_name]
    host = topology.host(host_name)
    return render.iked_conf(
        topology,
        host,
        peer_any=host_name in options.peer_any,
        proposals=options.proposals
        or (render.proposals_for(topology, options.platforms, host) if options.platforms else None),
        dpd_interval=options.dpd_interval,
    )


def provision(topology: Topology, hosts: dict[str, Host], options: Options = Options()) -> None:
    everyone = list(hosts.values())
    gateways = [hosts[g.name] for g in topology.gateways]

    with step("network: addresses, routes, forwarding"):
        in_parallel(everyone, lambda h: h.apply(h.platform.network_actions(h.spec)))
    if not gateways:
        return
    with step("keys: made in each gateway, public halves exchanged"):
        in_parallel(gateways, lambda h: h.apply(h.platform.ipsec_prepare_actions(h.spec)))
        exchange_keys(topology, gateways)
    with step("iked.conf: rendered, written, checked by iked -n"):
        in_parallel(
            gateways,
            lambda h: write_iked_conf(
                h, rendered_iked_conf(topology, h.name, options), options.iked_conf_sources.get(h.name)
            ),
        )
    with step("iked: started"):
        start_iked(gateways)
    with step("tunnel: IKE SA ESTABLISHED with child SAs on both gateways"):
        wait_for_tunnel(gateways)


def exchange_keys(topology: Topology, gateways: list[Host]) -> None:
    """Make each gateway's key pair in the guest (if absent) and give its public half to the peer.

    Only public keys cross, and only over the consoles: private keys never leave their guest.
    """
    public_keys: dict[str, str] = {}

    def make_key(h: Host) -> None:
        h.check(h.platform.keygen_command())
        public_keys[h.name] = h.read_file(h.platform.public_key)

    def install_peer_key(h: Host) -> None:
        peer = topology.peer_of(h.spec)
        assert peer.ipsec
        h.write_file(h.platform.peer_pubkey_path(peer.ipsec.srcid), public_keys[peer.name], 0o644)

    in_parallel(gateways, make_key)
    in_parallel(gateways, install_peer_key)


def write_iked_conf(h: Host, text: str, source: str | None = None) -> None:
    """Write iked.conf (root only: iked refuses a group- or world-readable file) and have iked judge it;
    its complaints name `source` (the user's own file) and line when there is one."""
    h.write_file(h.platform.iked_conf, text, 0o600)
    verdict = h.run(h.platform.iked_check_command())
    if not IKED_OK.search(verdict.output):
        complaints = name_lines(verdict.output, h.platform.iked_conf, source or h.platform.iked_conf)
        raise ProvisionError(
            f"{h.name}: iked rejects {complaints[0] if complaints else (source or h.platform.iked_conf)}",
            "; ".join(complaints[1:]) or None,
        )


def start_iked(gateways: list[Host]) -> None:
    # Passive gateways first: an active one then finds its peer listening and needs no retransmission.
    passive = [h for h in gateways if h.spec.ipsec and h.spec.ipsec.mode == "passive"]
    active = [h for h in gateways if h not in passive]
    for group in (passive, active):
        in_parallel(group, lambda h: h.check(h.platform.iked_start_command()))


def stop_iked(gateways: list[Host]) -> None:
    in_parallel(gateways, lambda h: h.check(h.platform.iked_stop_command()))


def restart_tunnel(gateways: list[Host], timeout: float = SA_TIMEOUT) -> None:
    """Stop iked everywhere, start it again (passive side first) and wait for the tunnel."""
    stop_iked(gateways)
    start_iked(gateways)
    wait_for_tunnel(gateways, timeout)


def wait_for_tunnel(gateways: list[Host], timeout: float = SA_TIMEOUT) -> None:
    start = time.monotonic()
    in_parallel(gateways, lambda h: h.wait_established(max(1.0, timeout - (time.monotonic() - start))))
