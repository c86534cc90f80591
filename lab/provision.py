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
from lab.progress import step
from lab.topology import Topology

IKED_OK = re.compile(r"configuration OK")
SA_TIMEOUT = 90.0


@dataclass(frozen=True)
class Options:
    """What a lab may change about the guide's provisioning."""

    peer_any: tuple[str, ...] = ()  # gateways that accept their peer from any address (NAT in between)
    proposals: render.Proposals | None = None
    iked_conf: dict[str, str] = field(default_factory=dict)  # host -> a user's own iked.conf text


def in_parallel(hosts: Iterable[Host], action: Callable[[Host], object]) -> None:
    """Run `action` on each host at once; raise the first failure (naming its host) after all finish."""
    hosts = list(hosts)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = [(h, pool.submit(action, h)) for h in hosts]
    errors = [(h, f.exception()) for h, f in futures if f.exception()]
    for host, error in errors:
        if isinstance(error, IkedlabError):
            raise error
        raise ProvisionError(f"{host.name}: {type(error).__name__}: {error}") from error


def rendered_iked_conf(topology: Topology, host_name: str, options: Options) -> str:
    if host_name in options.iked_conf:
        return options.iked_conf[host_name]
    host = topology.host(host_name)
    return render.iked_conf(
        topology, host, peer_any=host_name in options.peer_any, proposals=options.proposals
    )


def provision(topology: Topology, hosts: dict[str, Host], options: Options = Options()) -> None:
    everyone = list(hosts.values())
    gateways = [hosts[g.name] for g in topology.gateways]

    with step("network: addresses, routes, forwarding"):
        in_parallel(everyone, lambda h: h.apply(h.platform.network_actions(h.spec)))
    if not gateways:
        return

    public_keys: dict[str, str] = {}

    def make_keys(h: Host) -> None:
        h.apply(h.platform.ipsec_prepare_actions(h.spec))
        h.check(h.platform.keygen_command())
        public_keys[h.name] = h.read_file(h.platform.public_key)

    with step("keys: made in each gateway, public halves exchanged"):
        in_parallel(gateways, make_keys)
        # Only public keys cross, and only over the consoles; private keys never leave their guest.
        in_parallel(gateways, lambda h: h.write_file(
            h.platform.peer_pubkey_path(topology.peer_of(h.spec).ipsec.srcid),  # type: ignore[union-attr]
            public_keys[topology.peer_of(h.spec).name],
            0o644,
        ))

    def configure(h: Host) -> None:
        h.write_file(h.platform.iked_conf, rendered_iked_conf(topology, h.name, options), 0o600)
        verdict = h.run(h.platform.iked_check_command())
        if not IKED_OK.search(verdict.output):
            raise ProvisionError(f"{h.name}: iked rejects {h.platform.iked_conf}: "
                                 f"{verdict.output.strip().splitlines()[-1] if verdict.output.strip() else 'no output'}")

    with step("iked.conf: rendered, written, checked by iked -n"):
        in_parallel(gateways, configure)
    with step("iked: started"):
        in_parallel(gateways, lambda h: h.check(h.platform.iked_start_command()))
    with step("tunnel: IKE SA ESTABLISHED with child SAs on both gateways"):
        wait_for_tunnel(gateways)


def wait_for_tunnel(gateways: list[Host], timeout: float = SA_TIMEOUT) -> None:
    start = time.monotonic()
    in_parallel(gateways, lambda h: h.wait_established(max(1.0, timeout - (time.monotonic() - start))))
