"""A platform's facts as data: lab/platforms/NAME.yaml read and checked (interface naming, memory, how it
boots, how its console logs in, what it can and cannot do, its daemon's words), one clear line naming the
file and field when something is wrong. lab.platforms re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lab.topology import SafeLoader

#: Every capability a platform states in its data file, either under `capabilities:` or, with the reason,
#: under `lacks:`. Scenarios skip or xfail on these, never on a platform's name.
CAPABILITIES = {
    "liveness_probes": "iked notices a peer that lost its SAs (dead peer detection) and renegotiates",
    "esp_aes_gcm": "AES-GCM for ESP child SAs",
    "esp_hmac_sha2_256": "hmac-sha2-256 for ESP child SAs",
    "enc0": "an enc(4) interface that shows traffic before encapsulation and after decapsulation",
    "decapsulated_capture": "capturing the plaintext around the tunnel (enc0 or a stand-in)",
    "pf": "pf(4) as the packet filter",
    "masquerade": "source NAT on a router (a home router in front of a gateway)",
    "syslog": "iked logs through syslog",
    "link_impairment": "netem on a router: loss, delay, jitter, rate and MTU of a link (ikedlab impair)",
}


@dataclass(frozen=True)
class LoginFacts:
    """How a freshly booted guest's console turns into a root shell."""

    ready: str  # regex seen once the guest is ready on its console (login prompt or ready banner)
    user: str | None = None  # None: the console is already a root shell
    password: str | None = None
    password_prompt: str = r"[Pp]assword:"


@dataclass(frozen=True)
class PlatformFacts:
    """A platform's data file, read and checked."""

    name: str
    description: str
    interface_prefix: str  # interface names: f"{prefix}{offset + index}"
    interface_offset: int  # NICs before the lab's own (a Vagrant box's management NIC)
    memory_mib: int
    boot: Literal["kernel", "disk"]
    login: LoginFacts
    capabilities: frozenset[str]
    lacks: dict[str, str] = field(default_factory=dict)  # capability -> why not
    vagrant_box: str | None = None  # the public Vagrant box the Vagrantfile boots (None: no box)
    iked_log: str = ""  # where iked's messages go (login banner, README)
    iked_conf_note: str = (
        ""  # comment lines for iked.conf: where this platform's tunnel differs from the guide
    )
    guide_spellings: bool = False  # the guide's OpenBSD commands also work here (the appliance's stand-ins)
    #: The login banner's commands per kind of host (gateway, lan, router): (command in this platform's
    #: spelling, what it shows); format fields: far, uplink, peer, gateway1 (lab/banner.py).
    banner: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # iked version -> the Linux image variant that carries it (None: the recipe as is); the first is the
    # default. Empty: the platform's iked cannot be chosen.
    iked_versions: dict[str, str | None] = field(default_factory=dict)
    image_variant: str | None = None  # the Linux image variant a kernel-boot platform boots by default
    # What the IKE daemon logs when a peer's signature does not verify; {id} is the peer's id (escaped).
    auth_failure: str = r"authentication failed for FQDN/{id}"
    # More of the daemon's own words for a tunnel that will not come up by waiting (a regex; iked's are
    # always read: lab.platforms.parsers.IKED_FATAL).
    fatal_log: str = ""
    #: The guest's command decoding base64 from stdin to stdout (Host.write_file sends files encoded).
    base64_decode: str = ""
    # The daemon's own words when one of its processes died (a regex over its log): iked's parent says
    # "lost child: ikev2 terminated; signal 11" (iked.c, proc.c). Read after every catalogue case.
    crash_log: str = r"lost child"


def load_facts(path: Path) -> PlatformFacts:
    """Read a platform data file; one clear line naming the file and field when something is wrong."""
    from lab.errors import PlatformError

    try:
        data = yaml.load(path.read_text(), Loader=SafeLoader)  # noqa: S506 - the safe loader
    except (OSError, yaml.YAMLError) as e:
        raise PlatformError(f"{path}: unreadable ({e})") from None

    def need(mapping: Any, key: str, kind: type, where: str) -> Any:
        if not isinstance(mapping, dict) or not isinstance(mapping.get(key), kind):
            raise PlatformError(f"{path}: {where}{key}: expected a {kind.__name__}")
        return mapping[key]

    interfaces = need(data, "interfaces", dict, "")
    login = need(data, "login", dict, "")
    has = set(need(data, "capabilities", list, ""))
    lacks = {str(k): str(v) for k, v in (data.get("lacks") or {}).items()}
    for name in sorted(has | set(lacks)):
        if name not in CAPABILITIES:
            raise PlatformError(f"{path}: '{name}' is not a known capability ({', '.join(CAPABILITIES)})")
    unstated = sorted(set(CAPABILITIES) - has - set(lacks))
    if unstated or has & set(lacks):
        both = sorted(has & set(lacks))
        problem = f"not stated: {', '.join(unstated)}" if unstated else f"in both: {', '.join(both)}"
        raise PlatformError(f"{path}: every capability goes under capabilities or lacks ({problem})")
    boot = need(data, "boot", str, "")
    if boot not in ("kernel", "disk"):
        raise PlatformError(f"{path}: boot: expected kernel or disk, not '{boot}'")
    return PlatformFacts(
        name=need(data, "name", str, ""),
        description=need(data, "description", str, ""),
        interface_prefix=need(interfaces, "prefix", str, "interfaces."),
        interface_offset=need(interfaces, "offset", int, "interfaces."),
        memory_mib=need(data, "memory_mib", int, ""),
        boot=boot,
        login=LoginFacts(
            ready=need(login, "ready", str, "login."),
            user=login.get("user"),
            password=login.get("password"),
            password_prompt=login.get("password_prompt") or LoginFacts.password_prompt,
        ),
        capabilities=frozenset(has),
        lacks=lacks,
        vagrant_box=data.get("vagrant_box"),
        iked_log=str(data.get("iked_log") or ""),
        iked_conf_note=str(data.get("iked_conf_note") or "").strip(),
        guide_spellings=bool(data.get("guide_spellings")),
        banner=_banner(path, data.get("banner") or {}),
        iked_versions={str(k): v for k, v in (data.get("iked_versions") or {}).items()},
        image_variant=data.get("image_variant"),
        auth_failure=data.get("auth_failure") or PlatformFacts.auth_failure,
        fatal_log=str(data.get("fatal_log") or ""),
        base64_decode=need(data, "base64_decode", str, ""),
        crash_log=str(data.get("crash_log") or PlatformFacts.crash_log),
    )


def _banner(path: Path, data: Any) -> dict[str, tuple[tuple[str, str], ...]]:
    """The `banner:` section: for each kind of host, a list of [command, what it shows]."""
    from lab.errors import PlatformError

    kinds = ("gateway", "lan", "router")
    if not isinstance(data, dict) or set(data) - set(kinds):
        raise PlatformError(f"{path}: banner: expected a mapping of {', '.join(kinds)}")
    banner = {}
    for kind, rows in data.items():
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in rows
        ):
            raise PlatformError(f"{path}: banner.{kind}: expected a list of [command, what it shows]")
        banner[kind] = tuple((r[0], r[1]) for r in rows)
    return banner
