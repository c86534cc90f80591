"""OpenBSD's dialect: the guide's own platform.

Guests boot the golden image made by lab.images.openbsd (one per release, from signify-verified install
media), log in as root on com1 (ikedlab's control channel; com0 is the learner's console), and are
configured the way the guide says: /etc/hostname.vioN, /etc/mygate, /etc/sysctl.conf, `rcctl` for iked.
Readings come from the tools OpenBSD ships: `ikectl show sa`, `netstat -s -p esp|ah`, `ping`, and tcpdump
on enc0 for the traffic before encapsulation and after decapsulation.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any

from lab import render
from lab.errors import IkedlabError, ImageError
from lab.platforms import Action, BootMedia, DaemonChoice, FileSpec, Platform
from lab.platforms.kernel_state import parse_ipsecctl_kernel
from lab.platforms.parsers import (
    parse_ikectl_show_sa,
    parse_netstat_esp_ah,
    parse_ping_summary,
    parse_tcpdump_lines,
)
from lab.readings import Capture, IpsecCounters, KernelState, PingResult, SaState

if TYPE_CHECKING:
    from lab.topology import Host

#: The interface OpenBSD shows decapsulated (and about-to-be-encapsulated) IPsec traffic on.
ENC_INTERFACE = "enc0"


def parse_iked_started(output: str) -> bool:
    """Judge `rcctl start iked`: "iked(ok)" when it started; nothing at all when it already ran."""
    text = output.strip()
    return "iked(failed)" not in text and (text == "" or "iked(ok)" in text)


class OpenBSD(Platform, name="openbsd"):
    # --- boot ---------------------------------------------------------------------------------------
    def boot_media(self, release: str | None = None, iked: DaemonChoice | None = None) -> BootMedia:
        """The cached golden image of `release` (the newest cached release when None)."""
        from lab.images import cached_openbsd_image

        image = cached_openbsd_image(release)
        if image is None:
            pinned = f" --release {release}" if release else ""
            raise ImageError(
                f"no OpenBSD {release + ' ' if release else ''}image in the cache",
                f"build one with `ikedlab image build --platform openbsd{pinned}`"
                " (needs the internet or --iso PATH), "
                "or use --platform linux (make lab-up PLATFORM=linux)",
            )
        unverified = (
            ""
            if image.verified
            else (
                f"OpenBSD {image.release} image built from media nobody verified (image build --insecure: "
                f"{image.manifest.get('how', 'no signature checked')})"
            )
        )
        return BootMedia(disk=image.path, unverified=unverified)

    def media_available(self, release: str | None = None) -> bool:
        from lab.images import cached_openbsd_image

        return cached_openbsd_image(release) is not None

    def build_image(self, **options: Any) -> str:
        from lab.images import build_openbsd_image

        image = build_openbsd_image(**options, root_password=self.login.password or "")
        return f"openbsd {image.release} image: {image.path}"

    # --- provisioning -------------------------------------------------------------------------------
    def network_actions(self, host: Host) -> list[Action]:
        actions: list[Action] = [FileSpec("/etc/myname", f"{host.name}\n")]
        names = []
        for iface in host.interfaces:
            name = self.interface_name(iface.index)
            names.append(name)
            # netstart(8) wants hostname.if files unreadable by others; 0640 is what the installer makes.
            config = f"inet {iface.address.ip} {iface.address.netmask}\nup\n"
            actions.append(FileSpec(f"/etc/hostname.{name}", config, 0o640))
        if host.gateway is not None:
            actions.append(FileSpec("/etc/mygate", f"{host.gateway}\n"))
        actions.append(FileSpec("/etc/sysctl.conf", self.sysctl_conf(host)))
        actions.append(f"hostname {shlex.quote(host.name)}")
        actions.append(f"sh /etc/netstart {' '.join(names)}")
        if host.gateway is not None:
            # Replace rather than add: netstart may already have set it, and a re-run must not fail.
            actions.append(f"route -qn delete default >/dev/null 2>&1; route -qn add default {host.gateway}")
        actions.extend(f"sysctl {line}" for line in self.sysctl_conf(host).splitlines())
        return actions

    @staticmethod
    def sysctl_conf(host: Host) -> str:
        return render.sysctl_conf(host)

    def ipsec_prepare_actions(self, host: Host) -> list[Action]:
        # /etc/rc made the key pair at boot (the image ships none); provisioning still runs keygen_command,
        # which only fills a gap. ESP and AH are on (network_actions' sysctls); pf's default rules pass IPsec.
        private_dir = self.private_key.rsplit("/", 1)[0]
        return [f"mkdir -p {private_dir} {self.pubkeys_dir} && chmod 700 {private_dir}"]

    def ike_start_command(self) -> str:
        # rcctl exits non-zero and prints "iked(failed)" when iked does not come up.
        return "rcctl enable iked && rcctl start iked"

    def ike_stop_command(self) -> str:
        return "rcctl stop iked"

    def clock_command(self) -> str:
        # OpenBSD reads the RTC only at boot and resume: the host's time goes over the console. date(1) sets
        # [[[[[cc]yy]mm]dd]HH]MM[.SS], read as UTC with -u (bin/date/date.c rev 1.45, setthetime(); -u sets
        # TZ=UTC); the clock is then behind by the line's trip.
        return f"date -u {time.strftime('%Y%m%d%H%M.%S', time.gmtime(round(time.time())))} >/dev/null"

    def reseed_command(self, seed: bytes) -> str:
        # A write to /dev/random mixes the bytes into the entropy pool, then rekeys the kernel's ChaCha20
        # from it at once (sys/dev/rnd.c rev 1.230: randomwrite() -> add_entropy_words(), rnd_init() ->
        # _rs_stir()); else it rekeys only when its byte count runs out or every 10 minutes (rnd_reinit).
        # The hex text itself is the input: the pool takes any bytes, and these carry the seed's 256 bits.
        return f"echo {seed.hex()} >/dev/random"

    def versions_command(self) -> str:
        # iked is part of the base system: its version is the release's.
        return (
            'echo "kernel=$(uname -srvm)"; echo "os=$(sysctl -n kern.version | head -1)"; '
            'echo "iked=OpenBSD $(uname -r) base system"'
        )

    def kernel_ipsec_command(self) -> str:
        return "echo '# ipsecctl -sa'; ipsecctl -sa"  # without -k: no keys

    def kernel_state_command(self) -> str:
        return "ipsecctl -sa"

    def parse_kernel_state(self, output: str) -> KernelState:
        return parse_ipsecctl_kernel(output)

    def kernel_flush_command(self) -> str:
        return "ipsecctl -F"

    def ike_log_command(self) -> str:
        # iked logs through syslog's daemon facility: /var/log/daemon.
        return "grep -e 'iked\\[' -e 'iked:' /var/log/daemon || true"

    # --- readings -----------------------------------------------------------------------------------
    def masquerade_command(self, subnet: str, out_iface: str) -> str:
        # A whole ruleset: pass everything, translate the subnet's sources on the way out.
        rules = f"pass\\nmatch out on {out_iface} inet from {subnet} nat-to ({out_iface})\\n"
        return f"printf '{rules}' | pfctl -f -"

    def ipv6_actions(
        self, addresses: list[tuple[int, str]], gateway: str | None, forwarding: bool
    ) -> list[str]:
        actions = []
        for index, address in addresses:
            ip, prefix = address.split("/")
            actions.append(f"ifconfig {self.interface_name(index)} inet6 {ip} prefixlen {prefix}")
        if gateway:
            actions.append(f"route -qn delete -inet6 default; route -qn add -inet6 default {gateway}")
        actions.append(f"sysctl -q net.inet6.ip6.forwarding={int(forwarding)}")
        return actions

    def plain_ping_filter_command(self) -> str:
        # The regress's pf.in: echo requests are blocked everywhere but on enc0, in both IP versions. It
        # replaces the ruleset, as the regress does; the case's lab is restored from its snapshot afterwards.
        rules = (
            "block inet proto icmp all icmp-type echoreq\n"
            "pass on enc0 inet proto icmp all icmp-type echoreq\n"
            "block inet6 proto icmp6 all icmp6-type echoreq\n"
            "pass on enc0 inet6 proto icmp6 all icmp6-type echoreq\n"
        )
        return f"printf '{rules}' | pfctl -f - && {{ pfctl -e 2>/dev/null; true; }}"

    def unmasquerade_command(self) -> str:
        return "pfctl -f /etc/pf.conf"

    def checksum_command(self, path: str) -> str:
        return f"sha256 -q {shlex.quote(path)}"

    def ping_command(
        self, address: str, count: int, timeout_s: int, interval: float = 0.2, size: int | None = None
    ) -> str:
        # timeout_s is how long to wait for a reply (Linux's -W); OpenBSD's -w is how long to wait for
        # replies after the last request. Requests below 1 s apart are root's privilege.
        extra = (f" -s {size}" if size is not None else "") + (" -q" if count > 20 else "")
        return f"ping -n -c {count} -i {interval:g} -w {max(1, timeout_s)}{extra} {shlex.quote(address)}"

    def parse_ping(self, output: str) -> PingResult:
        return parse_ping_summary(output)

    def parse_sa(self, output: str) -> SaState:
        return parse_ikectl_show_sa(output)

    def counters_command(self, host: Host) -> str:
        return "netstat -s -p esp; netstat -s -p ah"

    def parse_counters(self, output: str) -> IpsecCounters:
        return parse_netstat_esp_ah(output)

    def capture_start_command(self, kind: str, pcap: str, iface: str | None = None, bpf: str = "") -> str:
        if kind == "decapsulated":
            iface = ENC_INTERFACE
        elif kind == "wire":
            if not iface:
                raise IkedlabError("a wire capture needs an interface name (e.g. vio0)")
        else:
            raise IkedlabError(f"unknown capture kind '{kind}' (expected decapsulated or wire)")
        bpf_arg = f" {shlex.quote(bpf)}" if bpf else ""
        # tcpdump creates the pcap once it listens; the caller waits for that file, not for a delay.
        return (
            f"tcpdump -n -l -i {shlex.quote(iface)} -w {shlex.quote(pcap)}{bpf_arg} >/dev/null 2>&1 & echo $!"
        )

    def parse_capture(self, output: str, kind: str) -> Capture:
        packets = parse_tcpdump_lines(output)
        notes = []
        if kind == "decapsulated" and any(p.spi is None for p in packets):
            notes.append("some enc0 packets carry no SPI header")
        return Capture(packets=packets, text=output, notes=notes)


#: root's password in every OpenBSD lab guest (the data file's login.password; lab-only, see there).
LAB_ROOT_PASSWORD: str = OpenBSD._facts.login.password or ""

__all__ = ["ENC_INTERFACE", "LAB_ROOT_PASSWORD", "OpenBSD", "parse_iked_started"]
