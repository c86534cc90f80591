"""The guide's lab in the guide's words: who is who, for scenarios to read like the guide."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lab.host import Host
from lab.lab import Lab


@dataclass(frozen=True)
class Guide:
    init: Host
    resp: Host
    initlan: Host
    resplan: Host
    inet: Host

    def address(self, host: Host) -> str:
        return str(host.spec.interfaces[0].address.ip)

    def public(self, gateway: Host) -> str:
        return str(gateway.spec.uplink.address.ip)

    def lan(self, gateway: Host, lab: Lab) -> ipaddress.IPv4Network:
        assert lab.topology
        return lab.topology.protected_subnet(gateway.spec)


def guide(lab: Lab) -> Guide:
    return Guide(*(lab.host(name) for name in ("init", "resp", "initlan", "resplan", "inet")))


def wait_for_log(host: Host, pattern: str, timeout: float) -> str:
    """Wait until iked's log on `host` shows `pattern` since iked last started (the mark `start_ike`
    leaves, which up's fail-fast and --expect-failure read from too); return the matching line."""
    __tracebackhide__ = True  # a failure points at the scenario's line, not here
    regex = re.compile(pattern)
    log = host.wait_until(
        f"iked's log matching /{pattern}/ since iked started",
        lambda: host.iked_log(host.ike_log_mark),
        lambda text: bool(regex.search(text)),
        timeout,
    )
    match = regex.search(log)
    assert match
    return log[log.rfind("\n", 0, match.start()) + 1 : log.find("\n", match.end())]
