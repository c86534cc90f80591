"""Every file ikedlab generates for a guest, from jinja2 templates: iked.conf today.

The provisioning plan (lab/plan.py) takes its files from here; provisioning, `ikedlab render` and the
Vagrantfile all run that plan, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from lab.ikedconf import macro_name
from lab.topology import Host, Topology

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("lab", "templates"),
    autoescape=False,  # plain-text configuration files
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def template(name: str) -> jinja2.Template:
    """One of lab/templates/, for modules that render a guest file of their own (lab/banner.py)."""
    return _env.get_template(name)


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
class Lifetimes:
    """How long SAs live before iked rekeys them (iked.conf `ikelifetime`, `lifetime … bytes`): short ones
    make rekeying happen during a scenario."""

    ike_seconds: int = 0  # 0: the IKE SA is not rekeyed (iked's default)
    child_seconds: int = 3600
    child_bytes: str | None = None  # iked's spelling: 64K, 1M


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


def sysctl_conf(host: Host, note: str = "") -> str:
    """/etc/sysctl.conf as the guide has it: forwarding where the host routes, ESP and AH on."""
    lines = [f"# {line}" for line in note.splitlines()]
    lines += ["net.inet.ip.forwarding=1"] if host.forwarding else []
    lines += ["net.inet.esp.enable=1", "net.inet.ah.enable=1"]
    return "\n".join(lines) + "\n"


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
    lifetimes: Lifetimes | None = None,
    note: str = "",
) -> str:
    """The gateway's iked.conf: macros, then one policy with the guide's two flows, mirrored on the peer.

    Both gateways define the same macros in the same order, as the guide does: the gateways, then their
    networks, each in the topology's order. `note` (the platform's word on how it differs from the guide)
    becomes comment lines under the header.
    """
    peer = topology.peer_of(host)
    me, other = _side(topology, host), _side(topology, peer)
    order = list(topology.hosts)
    sides = sorted((me, other), key=lambda side: order.index(side.name))
    return _env.get_template("iked.conf.j2").render(
        me=me,
        peer=other,
        sides=sides,
        peer_any=peer_any,
        proposals=proposals,
        dpd_interval=dpd_interval,
        lifetimes=lifetimes,
        note=note.splitlines(),
    )


#: iked.conf's transform names -> strongSwan's proposal keywords.
_SWAN = {
    "aes-128": "aes128",
    "aes-256": "aes256",
    "hmac-sha2-256": "sha256",
    "hmac-sha2-384": "sha384",
    "hmac-sha2-512": "sha512",
    "hmac-sha1": "sha1",
    "ecp256": "ecp256",
    "ecp384": "ecp384",
    "curve25519": "curve25519",
    "modp2048": "modp2048",
}


def swanctl_conf(
    topology: Topology,
    host: Host,
    *,
    peer_any: bool = False,
    proposals: Proposals | None = None,
    dpd_interval: int | None = None,
    lifetimes: Lifetimes | None = None,
    note: str = "",
) -> str:
    """The gateway's swanctl.conf: iked.conf's policy for strongSwan, with explicit proposals always (an
    interop lab must name what both sides accept)."""
    p = proposals or Proposals()
    ike = f"{_SWAN[p.ike_enc]}-{_SWAN[p.ike_auth]}-prf{_SWAN[p.ike_prf]}-{_SWAN[p.group]}"
    return _env.get_template("swanctl.conf.j2").render(
        me=_side(topology, host),
        peer=_side(topology, topology.peer_of(host)),
        peer_any=peer_any,
        ike=ike,
        esp=f"{_SWAN[p.child_enc]}-{_SWAN[p.child_auth]}",
        dpd_interval=dpd_interval,
    )


#: iked.conf's transform names -> libreswan's.
_LIBRESWAN = {
    "aes-128": "aes128",
    "aes-256": "aes256",
    "hmac-sha2-256": "sha2_256",
    "hmac-sha2-384": "sha2_384",
    "hmac-sha2-512": "sha2_512",
    "hmac-sha1": "sha1",
    "ecp256": "dh19",
    "ecp384": "dh20",
    "curve25519": "dh31",
    "modp2048": "modp2048",
}
#: Where the libreswan gateway's keys go (lab/platforms/libreswan.py writes it, ipsec.conf includes it).
LIBRESWAN_KEYS_CONF = "/etc/ipsec.d/ikedlab-keys.conf"
LIBRESWAN_LOG = "/var/log/pluto.log"


def libreswan_conf(
    topology: Topology,
    host: Host,
    *,
    peer_any: bool = False,
    proposals: Proposals | None = None,
    dpd_interval: int | None = None,
    lifetimes: Lifetimes | None = None,
    note: str = "",
) -> str:
    """The gateway's ipsec.conf: iked.conf's policy for libreswan, with explicit proposals always and the
    IKE group pinned (one KE payload iked accepts, no INVALID_KE round trip)."""
    p = proposals or Proposals()
    if p.ike_auth != p.ike_prf:  # libreswan's "ENC-HASH;GROUP" uses one hash for both
        raise ValueError(f"libreswan: IKE integrity {p.ike_auth} and PRF {p.ike_prf} must be the same")
    return _env.get_template("ipsec.conf.j2").render(
        me=_side(topology, host),
        peer=_side(topology, topology.peer_of(host)),
        peer_any=peer_any,
        ike=f"{_LIBRESWAN[p.ike_enc]}-{_LIBRESWAN[p.ike_auth]};{_LIBRESWAN[p.group]}",
        esp=f"{_LIBRESWAN[p.child_enc]}-{_LIBRESWAN[p.child_auth]}",
        dpd_interval=dpd_interval,
        keys_conf=LIBRESWAN_KEYS_CONF,
        log=LIBRESWAN_LOG,
    )
