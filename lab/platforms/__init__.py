"""Guest platforms: one module per OS dialect, found through a registry.

A platform turns intents (an address on an interface, a default route, iked started) into actions for a
shell on the guest's serial console, and turns the output of its commands back into typed readings through
pure parsers. It knows nothing of libvirt or of the topology's shape beyond one host.
"""

from __future__ import annotations

import importlib
import shlex
from dataclasses import dataclass
from typing import ClassVar

from lab.readings import Capture, IpsecCounters, PingResult, SaState
from lab.topology import Host


@dataclass(frozen=True)
class FileSpec:
    """A text file to write in the guest (verified by checksum after writing)."""

    path: str
    content: str
    mode: int = 0o644


#: What provisioning applies in order: a shell command that must exit 0, or a file to write.
Action = str | FileSpec


@dataclass(frozen=True)
class LoginFacts:
    """How a freshly booted guest's console turns into a root shell."""

    ready: str  # regex seen once the guest is ready on its console (login prompt or ready banner)
    user: str | None = None  # None: the console is already a root shell
    password: str | None = None
    password_prompt: str = r"[Pp]assword:"


class Platform:
    name: ClassVar[str]
    _registry: ClassVar[dict[str, type[Platform]]] = {}

    #: interface names: f"{interface_prefix}{index}"
    interface_prefix: ClassVar[str]
    login: ClassVar[LoginFacts]

    # Where iked's files live (the same layout on OpenBSD and on OpenIKED portable).
    iked_conf: ClassVar[str] = "/etc/iked.conf"
    private_key: ClassVar[str] = "/etc/iked/private/local.key"
    public_key: ClassVar[str] = "/etc/iked/local.pub"
    pubkeys_dir: ClassVar[str] = "/etc/iked/pubkeys/fqdn"

    def __init_subclass__(cls, name: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
            Platform._registry[name] = cls

    # --- identity -----------------------------------------------------------------------------------
    def interface_name(self, index: int) -> str:
        return f"{self.interface_prefix}{index}"

    def peer_pubkey_path(self, srcid: str) -> str:
        return f"{self.pubkeys_dir}/{srcid}"

    # --- provisioning: intents to actions -----------------------------------------------------------
    def network_actions(self, host: Host) -> list[Action]:
        """Addresses, default route, forwarding: the host reachable on all its links."""
        raise NotImplementedError

    def ipsec_prepare_actions(self, host: Host) -> list[Action]:
        """What a gateway needs before iked starts (sysctls, kernel modules, counters, key directories)."""
        raise NotImplementedError

    def keygen_command(self) -> str:
        """Make the ECDSA prime256v1 key pair at private_key/public_key unless it exists."""
        return (
            f"test -s {self.private_key} || {{ umask 077; openssl ecparam -genkey -name prime256v1 -noout "
            f"-out {self.private_key} && chmod 600 {self.private_key}; }}; "
            f"test -s {self.public_key} || openssl ec -in {self.private_key} -pubout -out {self.public_key}"
        )

    def iked_check_command(self) -> str:
        return f"iked -n -f {self.iked_conf}"

    def iked_start_command(self) -> str:
        """Start iked; the command's exit status is the judge (0: iked runs)."""
        raise NotImplementedError

    def iked_stop_command(self) -> str:
        raise NotImplementedError

    def iked_log_command(self) -> str:
        """Print iked's log so far."""
        raise NotImplementedError

    def masquerade_command(self, subnet: str, out_iface: str) -> str:
        """Hide `subnet` behind this router's address on `out_iface` (source NAT), as a home router does."""
        raise NotImplementedError

    def unmasquerade_command(self) -> str:
        raise NotImplementedError

    # --- readings: the command and its judge ---------------------------------------------------------
    def checksum_command(self, path: str) -> str:
        raise NotImplementedError

    def parse_checksum(self, output: str) -> str:
        return output.split()[0].lower() if output.split() else ""

    def ping_command(self, address: str, count: int, timeout_s: int) -> str:
        """Ping `count` times, 0.2 s apart (root may), waiting up to `timeout_s` seconds for each reply."""
        raise NotImplementedError

    def parse_ping(self, output: str) -> PingResult:
        raise NotImplementedError

    def sa_command(self) -> str:
        return "ikectl show sa"

    def parse_sa(self, output: str) -> SaState:
        raise NotImplementedError

    def counters_command(self, host: Host) -> str:
        raise NotImplementedError

    def parse_counters(self, output: str) -> IpsecCounters:
        raise NotImplementedError

    def capture_start_command(self, kind: str, pcap: str, iface: str | None = None, bpf: str = "") -> str:
        """Start a capture in the background writing `pcap`; print its process id.

        kind "decapsulated": plaintext before encapsulation and after decapsulation (OpenBSD's enc0);
        kind "wire": what crosses interface `iface`.
        """
        raise NotImplementedError

    def capture_stop_command(self, pid: int) -> str:
        return f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.1; done"

    def capture_read_command(self, pcap: str) -> str:
        return f"tcpdump -n -r {shlex.quote(pcap)}"

    def parse_capture(self, output: str, kind: str) -> Capture:
        raise NotImplementedError


def platform_names() -> tuple[str, ...]:
    _load_all()
    return tuple(sorted(Platform._registry))


def get_platform(name: str) -> Platform:
    _load_all()
    try:
        return Platform._registry[name]()
    except KeyError:
        from lab.errors import IkedlabError

        raise IkedlabError(f"unknown platform '{name}' (known: {', '.join(platform_names())})") from None


_MODULES = ("linux", "openbsd")


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"lab.platforms.{module}")


__all__ = ["Action", "FileSpec", "LoginFacts", "Platform", "get_platform", "platform_names"]
