"""The proof that a lab is healthy before it is handed over: the IKE SA ESTABLISHED on every gateway and one
ping across the tunnel, every host at once (after a restore, each shell proven first by one sync line)."""

from __future__ import annotations

import time

from lab import progress
from lab.host import Host
from lab.parallel import in_parallel
from lab.progress import step
from lab.provision import tunnel_probe
from lab.topology import Topology

VERIFY_SECONDS = 30.0  # a restored lab's tunnel is already up: this only bounds a sick one


def verify(
    topology: Topology, hosts: dict[str, Host], timeout: float = VERIFY_SECONDS, resumed: bool = False
) -> None:
    """The lab is healthy: IKE SA ESTABLISHED on every gateway, and one ping crosses the tunnel.

    `resumed`: the guests were just restored, their consoles new: each host first proves its shell (one
    sync line, which also sets the guest's clock from the host's and reseeds its RNG: a restored guest
    resumes the clock and the random state of its save), then does its part of the proof, every host at
    once; one command each while all is well. The slowest shell and the slowest check are printed."""
    probe = tunnel_probe(topology)
    gateways = {g.name for g in topology.gateways}
    shell: dict[str, float] = {}
    check: dict[str, float] = {}

    def prove(host: Host) -> None:
        started = time.monotonic()
        if resumed:
            host.prove_restored()
        shell[host.name] = time.monotonic() - started
        if host.name in gateways:
            host.wait_established(timeout)
        if probe and host.name == probe[0]:
            host.wait_until(
                f"a ping from {host.name} to {probe[1]} across the tunnel",
                lambda: host.ping(probe[1], count=1, timeout_s=1).received,
                bool,
                timeout,
            )
        check[host.name] = time.monotonic() - started - shell[host.name]

    what = "every shell answers, " if resumed else ""
    with step(f"verify: {what}IKE SAs ESTABLISHED, one ping across the tunnel, every host at once"):
        in_parallel(hosts.values(), prove)
    if resumed:
        slowest = max(shell, key=lambda h: shell[h])
        progress.record(f"verify: shell proven by one sync line (slowest: {slowest})", shell[slowest])
    slowest = max(check, key=lambda h: check[h])
    progress.record(f"verify: SAs and ping (slowest: {slowest})", check[slowest])
