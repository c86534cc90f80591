"""The lab's booted base: its guests booted, addressed and routed, each gateway's kernel made ready and its
key pair made, the public halves exchanged — everything below the IKE daemon — saved as a warm snapshot layer
of its own (`LAB.base`, lab/snapshot.py) under the provisioned one.

An `up` whose inputs changed only above it (a gateway's iked.conf, a local iked build, options such as NAT or
proposals, the provisioning code of the daemon's part) restores the base and runs only the daemon's part of
provisioning (lab/provision.py `provision_daemon`): the build put in place, iked.conf, iked started, the
tunnel. The provisioned snapshot stays the fast path when nothing changed; a cold `up` saves both.

What the base holds, and so what every `up` from it shares: each gateway's key pair, made in the guest when
the base was saved (the private half never leaves it; the lab's name is an input, so two labs never share
keys), its peer's public key, the kernel's IPsec modules and nftables counters, addresses, routes and
sysctls. What it never holds: an iked.conf, an IKE daemon started, an SA, a local iked build (delivered after
each restore through the files channel, lab/delivery.py). A case that needs keys of its own makes them after
`up`, as a cold lab would.

Keyed by what it is made of: the lab's name, topology, hypervisor, each host's image and domain (all of
lab/warm.py `below_provisioning`), and each host's network and key actions and peer key path — not by
iked.conf, a local build, options or the code that runs after it. A gateway whose image differs (iked 7.4 is
the trixie image variant) is another base: the first `up` with it boots cold and saves it.
"""

from __future__ import annotations

from lab import snapshot, warm
from lab.blueprint import Blueprint
from lab.plan import KEYS, NETWORK

LAYER = "base"


def name(lab: str) -> str:
    """The base's snapshot name: beside the lab's own, never a lab's name (those have no dot)."""
    return snapshot.layer_name(lab, LAYER)


def inputs(blueprint: Blueprint, hypervisor_version: str) -> snapshot.Inputs:
    """Everything the booted base is made of, each by name, so a stale one says what changed."""
    values = warm.below_provisioning(blueprint, hypervisor_version)
    plan = blueprint.plan
    for host, host_plan in plan.hosts.items():
        values[f"base actions {host}"] = snapshot.digest(
            repr((host_plan.actions(NETWORK), host_plan.actions(KEYS)))
        )
    for gateway in plan.gateways:
        values[f"peer key {gateway.name}"] = plan.peer_key_path(gateway.name)
    summary = {
        "layer": "booted base (below iked)",
        "topology": blueprint.topology.path.name,
        "platforms": ",".join(blueprint.platform_names()),
        "images": " ".join(sorted({values[f"image {h}"][:12] for h in blueprint.media})),
    }
    return snapshot.Inputs(values, summary)


def of(blueprint: Blueprint, hypervisor_version: str) -> snapshot.Snapshot | None:
    """The lab's booted base, when it is the base of exactly what `blueprint` describes; else None."""
    found, _ = snapshot.usable(name(blueprint.lab), inputs(blueprint, hypervisor_version))
    return found
