"""Guest platforms: one module and one data file per OS dialect, found through a registry.

A platform turns intents (an address on an interface, a default route, iked started) into actions for a
shell on the guest's serial console, and turns the output of its commands back into typed readings through
pure parsers. Its facts are data, in lab/platforms/NAME.yaml: interface naming, memory, how it boots, how its
console logs in, and what it can and cannot do (capabilities, each missing one with its reason). Nothing
outside lab/platforms/ and lab/images/ asks which platform it has: it asks the platform.
It knows nothing of libvirt or of the topology's shape beyond one host.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lab.errors import IkedlabError
from lab.platforms.facts import CAPABILITIES, LoginFacts, PlatformFacts, load_facts
from lab.readings import Capture, IpsecCounters, KernelState, PingResult, SaState

if TYPE_CHECKING:
    from lab.ikedconf import IkedJudge
    from lab.render import Lifetimes, Proposals
    from lab.topology import Host, Topology


@dataclass(frozen=True)
class FileSpec:
    """A text file to write in the guest (verified by checksum after writing)."""

    path: str
    content: str
    mode: int = 0o644


#: What provisioning applies in order: a shell command that must exit 0, or a file to write.
Action = str | FileSpec


@dataclass(frozen=True)
class BootMedia:
    """What a guest boots from: a kernel and initrd booted directly, or a golden disk each guest overlays."""

    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    disk: Path | None = None
    daemon: str = ""  # the IKE daemon it carries, for the status table ("iked 7.4-1", "strongSwan 6.0.1")
    # What the image is by content (its manifest's digest), wherever its files are; "" when only the files
    # can say (an image whose build is not reproducible). Warm snapshots are keyed by it.
    identity: str = ""
    # A local iked build's cache entry (lab/images/iked_build.py), put over the image's iked once the guest
    # runs (lab/delivery.py): the guest boots the plain image, so a lab's booted base serves every build.
    build: Path | None = None
    # The iked this image runs, as the host can run it to judge a user's iked.conf (None: only the guest can).
    judge: IkedJudge | None = None
    unverified: str = ""  # why the image is not to be trusted (unverified media), said by `up` and `status`


@dataclass(frozen=True)
class DaemonChoice:
    """Which iked a gateway runs: a packaged version (the platform's `iked_versions`), or a local build
    from an OpenIKED portable source tree. Both None: the platform's default."""

    version: str | None = None
    source: Path | None = None


def _data_file(name: str) -> Path:
    return Path(str(resources.files("lab.platforms") / f"{name}.yaml"))


#: Bytes of the host's randomness a restored guest's RNG gets: a whole ChaCha20 key's worth (256 bits).
RESEED_BYTES = 32


class Platform:
    """A guest OS dialect: `class X(Platform, name="x")` in lab/platforms/x.py registers it, with its facts
    in lab/platforms/x.yaml."""

    name: ClassVar[str]
    _registry: ClassVar[dict[str, type[Platform]]] = {}
    _facts: ClassVar[PlatformFacts]

    # Where iked's files live (the same layout on OpenBSD and on OpenIKED portable).
    ike_conf: ClassVar[str] = "/etc/iked.conf"
    #: The configuration's format, by its usual file name: a catalogue case's template for this daemon is
    #: named after it (iked.conf.j2, swanctl.conf.j2, ipsec.conf.j2).
    ike_conf_format: ClassVar[str] = "iked.conf"
    private_key: ClassVar[str] = "/etc/iked/private/local.key"
    public_key: ClassVar[str] = "/etc/iked/local.pub"
    pubkeys_dir: ClassVar[str] = "/etc/iked/pubkeys/fqdn"
    ca_dir: ClassVar[str] = "/etc/iked/ca"  # CA certificates iked trusts
    certs_dir: ClassVar[str] = "/etc/iked/certs"  # its own certificates, and peers' it knows by id

    def __init_subclass__(cls, name: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
            cls._facts = load_facts(_data_file(name))
            if cls._facts.name != name:
                from lab.errors import PlatformError

                raise PlatformError(f"{_data_file(name)}: name: '{cls._facts.name}', expected '{name}'")
            Platform._registry[name] = cls

    def __init__(self, facts: PlatformFacts | None = None) -> None:
        self.facts = facts or self._facts

    def __repr__(self) -> str:
        return f"<platform {self.name}>"

    def with_leading_nics(self, count: int) -> Platform:
        """This platform on a machine that puts `count` NICs of its own before the lab's (e.g. Vagrant)."""
        return type(self)(replace(self.facts, interface_offset=self.facts.interface_offset + count))

    # --- facts ----------------------------------------------------------------------------------------
    @property
    def login(self) -> LoginFacts:
        return self.facts.login

    @property
    def memory_mib(self) -> int:
        return self.facts.memory_mib

    def can(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability '{capability}' (known: {', '.join(CAPABILITIES)})")
        return capability in self.facts.capabilities

    def auth_failure_pattern(self, peer_id: str) -> str:
        """A regex for the log line of a failed authentication of `peer_id`, in this daemon's words."""
        return self.facts.auth_failure.replace("{id}", re.escape(peer_id))

    def fatal_log_pattern(self) -> re.Pattern[str]:
        """A regex for a log line saying the tunnel will not come up: iked's words, and the daemon's own."""
        from lab.platforms.parsers import IKED_FATAL

        return re.compile("|".join(p for p in (IKED_FATAL, self.facts.fatal_log) if p))

    def why_not(self, capability: str) -> str:
        """The data file's reason this platform lacks `capability` ("" when it has it)."""
        return "" if self.can(capability) else f"{self.name}: {self.facts.lacks[capability]}"

    # --- boot -----------------------------------------------------------------------------------------
    def boot_media(self, release: str | None = None, iked: DaemonChoice | None = None) -> BootMedia:
        """The golden image guests of this platform boot (built or found in the cache); ImageError if none.
        `iked` picks the gateway's iked where the platform allows a choice (`iked_versions`)."""
        raise NotImplementedError

    def check_daemon_choice(self, host: str, iked: DaemonChoice) -> None:
        """PlatformError naming the host when this platform cannot run that iked."""
        from lab.errors import PlatformError

        versions = self.facts.iked_versions
        if not versions:
            raise PlatformError(f"{host}: platform {self.name} has no iked version to choose")
        if iked.version is not None and iked.version not in versions:
            known = ", ".join(versions)
            raise PlatformError(f"{host}: iked {iked.version} is not on {self.name} (versions: {known})")

    def media_available(self, release: str | None = None) -> bool:
        """Whether boot_media() can succeed on this machine without the internet."""
        return True

    def kernel_cmdline(self, media: BootMedia, host: str) -> str:
        """The kernel command line of `host` (kernel boot only)."""
        return media.cmdline

    def build_image(self, **options: Any) -> str:
        """`ikedlab image build`: build (or reuse) the golden image; say what and where."""
        raise NotImplementedError

    # --- identity -----------------------------------------------------------------------------------
    def interface_name(self, index: int) -> str:
        return f"{self.facts.interface_prefix}{index + self.facts.interface_offset}"

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

    def render_ike_conf(
        self,
        topology: Topology,
        host: Host,
        *,
        peer_any: bool = False,
        proposals: Proposals | None = None,
        dpd_interval: int | None = None,
        lifetimes: Lifetimes | None = None,
    ) -> str:
        """This platform's IKE daemon configuration for gateway `host` (written at `ike_conf`), in the
        guide's shape: iked.conf here, with the data file's note on how the platform differs."""
        from lab import render

        return render.iked_conf(
            topology,
            host,
            peer_any=peer_any,
            proposals=proposals,
            dpd_interval=dpd_interval,
            lifetimes=lifetimes,
            note=self.facts.iked_conf_note,
        )

    def ike_check_command(self, path: str | None = None) -> str:
        return f"iked -n -f {path or self.ike_conf}"

    def ike_start_command(self) -> str:
        """Start iked; the command's exit status is the judge (0: iked runs)."""
        raise NotImplementedError

    def ike_stop_command(self) -> str:
        raise NotImplementedError

    def iked_flags_command(self, flags: str) -> str:
        """Give iked these command-line flags from its next start on (OpenBSD: `rcctl set iked flags`)."""
        return f"rcctl set iked flags {flags}".rstrip()

    def ike_running_command(self) -> str:
        """Exit 0 while the IKE daemon runs."""
        return "rcctl check iked"

    def sysctl_command(self, name: str, value: str) -> str:
        """Set a kernel setting named as on OpenBSD (the regress's `sysctl net.inet.ipcomp.enable=1`)."""
        return f"sysctl {shlex.quote(name)}={shlex.quote(value)}"

    def crash_evidence_command(self) -> str | None:
        """Print what the system keeps of crashed processes (the kernel's lines about them): a line that was
        not there before a case is a crash during it. None: the platform keeps nothing to read."""
        return None

    def ike_debug_command(self) -> str:
        """iked in the foreground, verbose, logging to the terminal: the guide's first step (`iked -dv`)."""
        return f"iked -dv -f {self.ike_conf}"

    def ike_log_command(self) -> str:
        """Print iked's log so far."""
        raise NotImplementedError

    def clock_command(self) -> str:
        """Set the guest's wall clock to the host's, printing nothing; made at the moment it is sent. A
        restored guest resumes the clock of its save (measured: 113 s behind after a 90 s gap)."""
        raise NotImplementedError

    def reseed_command(self, seed: bytes) -> str:
        """Mix `seed` (the host's random bytes) into the guest kernel's RNG and rekey it at once, printing
        nothing. Guests restored from one snapshot share one RNG state, and would draw the same bytes (SPIs,
        IKE nonces, DH keys) until their kernels reseed by themselves. The bytes travel as hex: the redactor
        takes 32 hex digits or more out of every log, so a sync line echoed by a shell not yet quiet leaves
        none there."""
        raise NotImplementedError

    def restored_command(self) -> str:
        """What rides on a restored guest's sync line (lab/host.py, `prove_restored`), made as it is sent:
        the host's time and RESEED_BYTES fresh bytes of the host's randomness."""
        return f"{self.clock_command()}; {self.reseed_command(os.urandom(RESEED_BYTES))}"

    def before_snapshot_command(self) -> str | None:
        """Run in the guest just before its memory is saved, to make the snapshot smaller (None: nothing)."""
        return None

    def ike_log_length_command(self) -> str:
        """Print how many lines iked's log has (a mark: what iked says after it is news)."""
        return f"{{ {self.ike_log_command()}; }} | wc -l"

    def ike_log_since_command(self, line: int) -> str:
        """Print iked's log from after line `line` on."""
        return f"{{ {self.ike_log_command()}; }} | tail -n +{line + 1}"

    def masquerade_command(self, subnet: str, out_iface: str) -> str:
        """Hide `subnet` behind this router's address on `out_iface` (source NAT), as a home router does."""
        raise NotImplementedError

    def ipv6_actions(
        self, addresses: list[tuple[int, str]], gateway: str | None, forwarding: bool
    ) -> list[str]:
        """IPv6 on a running host: (interface index, address/prefix) pairs, a default route, forwarding."""
        raise NotImplementedError

    def plain_ping_filter_command(self) -> str:
        """Drop ICMP echo requests that did not come, and will not leave, through IPsec (both IP versions),
        as openiked's live regress does with pf (pf.in): a ping then passes only through a tunnel."""
        raise NotImplementedError

    def unmasquerade_command(self) -> str:
        raise NotImplementedError

    def receive_files_command(self, channel: str, size: int, token: str) -> str:
        """Open the virtio serial port named `channel` (the files channel: lab/delivery.py), say `token` on
        the console, skip what comes before a line holding `token` on the port, then read exactly `size`
        bytes, a gzip'd tar, and unpack them at /."""
        raise NotImplementedError

    # --- readings: the command and its judge ---------------------------------------------------------
    def checksum_command(self, path: str) -> str:
        raise NotImplementedError

    def parse_checksum(self, output: str) -> str:
        return output.split()[0].lower() if output.split() else ""

    def ping_command(
        self, address: str, count: int, timeout_s: int, interval: float = 0.2, size: int | None = None
    ) -> str:
        """Ping `count` times, `interval` s apart (root may go below 1 s), waiting up to `timeout_s` seconds
        for each reply; `size` bytes of payload (the ping's default when None). Quiet: the summary only
        when the count is large."""
        raise NotImplementedError

    def parse_ping(self, output: str) -> PingResult:
        raise NotImplementedError

    def versions_command(self) -> str:
        """Print what the guest runs as `key=value` lines: kernel, os, iked (read by parse_versions)."""
        raise NotImplementedError

    def parse_versions(self, output: str) -> dict[str, str]:
        found = {}
        for line in output.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and value.strip():
                found[key.strip()] = value.strip()
        return found

    def kernel_ipsec_command(self) -> str:
        """Print the kernel's IPsec SAs and policies in the platform's own words (for evidence bundles)."""
        raise NotImplementedError

    def kernel_state_command(self) -> str:
        """Print the kernel's SAs and flows for parse_kernel_state, without any key."""
        raise NotImplementedError

    def parse_kernel_state(self, output: str) -> KernelState:
        raise NotImplementedError

    def kernel_flush_command(self) -> str:
        """Empty the kernel's SAD and SPD (OpenBSD's `ipsecctl -F`): a gateway with no IPsec state."""
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
        raise IkedlabError(f"unknown platform '{name}' (known: {', '.join(platform_names())})") from None


def _load_all() -> None:
    # Every module beside this one that has a data file of its name is a platform.
    for data in sorted(resources.files("lab.platforms").iterdir(), key=lambda p: p.name):
        if data.name.endswith(".yaml"):
            importlib.import_module(f"lab.platforms.{data.name.removesuffix('.yaml')}")


__all__ = [
    "CAPABILITIES",
    "Action",
    "BootMedia",
    "FileSpec",
    "DaemonChoice",
    "LoginFacts",
    "Platform",
    "PlatformFacts",
    "get_platform",
    "platform_names",
]
