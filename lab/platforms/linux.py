"""The Linux appliance's dialect: busybox + iproute2 + nftables + OpenIKED portable (PF_KEY).

OpenIKED on Linux has no enc0 and no `netstat -s -p esp`; the closest readings (FACTS.md, measured):
per-SA packet counters from `ip -s xfrm state` stand for netstat's ESP/AH counters, nftables counters count
ESP and AH on the wire, and nftables rules log the plaintext around the tunnel (`meta ipsec exists` after
decapsulation, `rt ipsec exists` before encapsulation) to an nflog group that tcpdump reads like enc0.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import TYPE_CHECKING, Any

from lab import render
from lab.ikedconf import IkedJudge, tree_judge
from lab.platforms import Action, BootMedia, DaemonChoice, FileSpec, Platform
from lab.platforms.kernel_state import POLICY_MARK, parse_ip_xfrm
from lab.platforms.parsers import parse_ikectl_show_sa, parse_ping_summary, parse_tcpdump_lines
from lab.readings import Capture, IpsecCounters, KernelState, PingResult, SaState

if TYPE_CHECKING:
    from lab.topology import Host

# Provisioning names each tool by its full path: what runs never depends on a guest's PATH.
IP = "/bin/ip"
NFT = "/usr/sbin/nft"
IKED = "/usr/sbin/iked"
MODPROBE = "/sbin/modprobe"
TCPDUMP = "/usr/bin/tcpdump"
RCCTL = "/usr/local/sbin/rcctl"  # the appliance's stand-in for OpenBSD's rcctl

NFLOG_GROUP = 5  # also in the appliance's tcpdump (-i enc0 → nflog:5); a fast test holds them together
IKED_LOG = "/var/log/iked.log"  # also in the appliance's rcctl
NFT_RULES = "/etc/ikedlab.nft"

# An IPsec gateway's kernel is made ready before its IKE daemon starts, because two costs otherwise fall
# inside the daemon's own system calls, where it answers nothing (`ikectl show sa` hangs, the peer
# retransmits, a half-started passive iked drops the exchange):
# - iked's PF_KEY registration has the kernel look up every algorithm XFRM knows by name, and each one the
#   image lacks (sm3, sm4, lzs, ...) spawns modprobe, on every iked start: measured 99 s from `rcctl start
#   iked` to ESTABLISHED on a loaded machine, 17 s with those spawns gone. So every module of the image
#   is loaded up front (ifb, dummy, veth left out: they make interfaces) and on-demand loading is
#   switched off (kernel.modprobe empty): a request could only miss. An explicit `modprobe` still works.
# - the first ESP SA loads and self-tests its algorithms and seeds the DRBG: 25.7 s measured. One
#   throwaway SA (loopback, the default proposal's algorithms), deleted at once, pays that here.
_ALL_MODULES = (
    "$(sed 's/:.*//; s#.*/##; s/[.]ko.*//' /lib/modules/$(uname -r)/modules.dep"
    " | grep -v -x -e ifb -e dummy -e veth)"
)
_WARMUP_SA = "src 127.0.0.1 dst 127.0.0.1 proto esp spi 0x1badcafe"
_WARMUP_KEYS = f"enc 'cbc(aes)' 0x{'11' * 32} auth-trunc 'hmac(sha384)' 0x{'22' * 48} 192"

# Counters and the enc0 stand-in, loaded on every IPsec gateway before iked starts. queue-threshold 1:
# nflog hands each packet to tcpdump at once instead of batching, so a capture stopped right after the
# traffic has all of it. Decapsulated packets are logged as they come out of the tunnel (prerouting), as
# enc0 shows them on OpenBSD, before the gateway decides whether to take or forward them: logged in input
# and forward instead, a packet for the LAN vanished from `tcpdump -i enc0` with forwarding off.
_NFT_RULESET = f"""\
table inet ikedlab
delete table inet ikedlab
table inet ikedlab {{
	counter esp_in {{ }}
	counter esp_out {{ }}
	counter ah_in {{ }}
	counter ah_out {{ }}
	chain prerouting {{
		type filter hook prerouting priority 0; policy accept;
		meta ipsec exists log group {NFLOG_GROUP} queue-threshold 1
	}}
	chain input {{
		type filter hook input priority 0; policy accept;
		meta l4proto esp counter name esp_in
		meta l4proto ah counter name ah_in
	}}
	chain forward {{
		type filter hook forward priority 0; policy accept;
		rt ipsec exists log group {NFLOG_GROUP} queue-threshold 1
	}}
	chain output {{
		type filter hook output priority 0; policy accept;
		meta l4proto esp counter name esp_out
		meta l4proto ah counter name ah_out
		rt ipsec exists log group {NFLOG_GROUP} queue-threshold 1
	}}
}}
"""


class Linux(Platform, name="linux"):
    # --- boot ---------------------------------------------------------------------------------------
    def boot_media(self, release: str | None = None, iked: DaemonChoice | None = None) -> BootMedia:
        from lab.images import linux_image

        iked = iked or DaemonChoice()
        versions = self.facts.iked_versions
        variant = (
            versions.get(iked.version, self.facts.image_variant) if iked.version else self.facts.image_variant
        )
        # built from the host's apt when the cache has none: no release to pick
        image = linux_image(variant=variant)
        daemon = self.daemon_label(image.manifest)
        media = BootMedia(
            image.kernel,
            image.initrd,
            image.cmdline,
            daemon=daemon,
            identity=image.key,  # a reproducible build: the same manifest gives the same bytes
            judge=tree_judge(image.iked_tree, f"{daemon}, the image's own") if image.iked_tree else None,
        )
        if iked.source is None:
            return media
        from lab.images.iked_build import build_iked

        build = build_iked(iked.source)
        return dataclasses.replace(
            media,
            daemon=build.label,
            build=build.directory,  # put over the image's iked once the guest runs (lab/delivery.py)
            # Built on this host against the libraries the appliance carries: it runs here as it is.
            judge=IkedJudge((str(build.directory / "usr/sbin/iked"),), build.label),
        )

    def daemon_label(self, manifest: dict) -> str:
        """What the image runs as its IKE daemon, from its package versions."""
        version = manifest.get("packages", {}).get("openiked", "?")
        return f"iked {version}"

    def kernel_cmdline(self, media: BootMedia, host: str) -> str:
        return f"{media.cmdline} ikedlab.hostname={host}"  # the appliance's init names itself from this

    def build_image(self, **options: Any) -> str:
        from lab.images import linux_image

        image = linux_image(rebuild=bool(options.get("rebuild")))
        return f"linux image {image.key[:12]}: {image.kernel} {image.initrd}"

    # --- provisioning -------------------------------------------------------------------------------

    def network_actions(self, host: Host) -> list[Action]:
        actions: list[Action] = []
        for iface in host.interfaces:
            name = self.interface_name(iface.index)
            actions.append(f"{IP} addr replace {iface.address} dev {name} && {IP} link set {name} up")
        if host.gateway:
            actions.append(f"{IP} route replace default via {host.gateway}")
        actions.append(f"echo {int(host.forwarding)} > /proc/sys/net/ipv4/ip_forward")
        actions.append(FileSpec("/etc/sysctl.conf", render.sysctl_conf(host, _SYSCTL_NOTE)))
        return actions

    def ipsec_prepare_actions(self, host: Host) -> list[Action]:
        return [
            # OpenIKED portable speaks PF_KEY; ESP and AH ready, as the guide's sysctl.conf asks.
            *self.kernel_ipsec_actions(),  # af_key, esp4, ah4 among them
            f"mkdir -p {self.pubkeys_dir} /etc/iked/private && chmod 700 /etc/iked/private",
        ]

    def kernel_ipsec_actions(self) -> list[Action]:
        """The kernel of an IPsec gateway, whatever IKE daemon runs above it: made ready (see _ALL_MODULES),
        with the counters and the enc0 stand-in."""
        return [
            f"{MODPROBE} -a {_ALL_MODULES}",
            FileSpec(NFT_RULES, _NFT_RULESET, 0o644),
            f"{NFT} -f {NFT_RULES}",
            f"{IP} xfrm state add {_WARMUP_SA} mode transport {_WARMUP_KEYS}"
            f" && {IP} xfrm state delete {_WARMUP_SA}",
            "echo > /proc/sys/kernel/modprobe",
        ]

    def ike_start_command(self) -> str:
        # The appliance's own rcctl (images/linux/rootfs/usr/local/sbin/rcctl) is the one definition of how
        # iked runs here, for provisioning and for a learner alike: in the foreground (-d -v) in its own
        # session, logging to IKED_LOG; it exits non-zero with "iked(failed)" when iked does not come up.
        return f"{RCCTL} start iked"

    def ike_stop_command(self) -> str:
        return f"{RCCTL} stop iked"

    def clock_command(self) -> str:
        # From the guest's RTC, which QEMU keeps on the host's time across a save and restore (seen here:
        # `hwclock -r` equal to the host's clock right after a restore): no console latency in it. Sent as
        # `date -s @SECONDS` instead, the clock was 2-4 s behind at load 10-15 (the line's trip).
        return "hwclock -s -u"

    def reseed_command(self, seed: bytes) -> str:
        # Linux 6.1 rekeys its crng from the input pool only when the key is 60 s old, by the guest's
        # jiffies, which resume where they were saved (drivers/char/random.c, crng_has_old_seed): a write to
        # /dev/urandom mixes the bytes in but rekeys nothing. The image's helper (images/linux/programs/
        # rng-reseed.c) mixes them in with RNDADDENTROPY and rekeys at once with RNDRESEEDCRNG.
        return f"/usr/local/sbin/rng-reseed {seed.hex()}"

    def ike_running_command(self) -> str:
        return f"{RCCTL} check iked"

    def iked_flags_command(self, flags: str) -> str:
        # The appliance's rcctl keeps them as OpenBSD's does (iked_flags= in /etc/rc.conf.local).
        return f"{RCCTL} set iked flags {flags}".rstrip()

    def sysctl_command(self, name: str, value: str) -> str:
        why = _OPENBSD_ONLY_SYSCTLS.get(name)
        if why:
            return ": " + shlex.quote(f"{name}={value}: nothing to set on Linux, {why}")
        return f"/usr/bin/busybox sysctl -w {shlex.quote(name)}={shlex.quote(value)}"

    def crash_evidence_command(self) -> str:
        # The kernel logs every user process killed by a fault (show_unhandled_signals): "iked[212]: segfault
        # at 0 ip … error 4 in iked[…]". The appliance keeps no core files (RLIMIT_CORE 0).
        return "dmesg | grep -E 'segfault at|general protection|traps:|trap invalid opcode' || true"

    def versions_command(self) -> str:
        # The appliance has no os-release: its packages' versions are in the image's manifest.
        return (
            'echo "kernel=$(uname -srvm)"; echo "os=ikedlab Linux appliance (Debian packages)"; '
            f'echo "iked=$({self.daemon_version_command()} 2>&1 | head -1)"'
        )

    def daemon_version_command(self) -> str:
        """Print the IKE daemon's version on its first line."""
        return f"{IKED} -V"

    def kernel_ipsec_command(self) -> str:
        return f"echo '# ip -s xfrm state'; {IP} -s xfrm state; echo '# ip xfrm policy'; {IP} xfrm policy"

    def ike_log_command(self) -> str:
        return f"cat {IKED_LOG} 2>/dev/null"

    def kernel_state_command(self) -> str:
        # `ip xfrm state` prints the SA keys: they are blanked in the guest, so no transcript holds one; `-s`
        # keeps each key's length ("(256 bits)"), which tells aes-128 from aes-256.
        return (
            f"{IP} -s xfrm state | sed -E 's/0x[0-9a-fA-F]{{16,}}/0x[key]/g'; "
            f"echo '{POLICY_MARK}'; {IP} xfrm policy"
        )

    def parse_kernel_state(self, output: str) -> KernelState:
        return parse_ip_xfrm(output)

    def kernel_flush_command(self) -> str:
        return f"{IP} xfrm state flush && {IP} xfrm policy flush"

    def before_snapshot_command(self) -> str:
        # A saved image skips all-zero pages, and Linux does not clear memory it frees: drop the page
        # cache, then let one short-lived buffer take (zeroed) most free memory and give it back.
        return (
            "sync; echo 3 > /proc/sys/vm/drop_caches; "
            "free=$(awk '/MemFree/ {print int($2/1024) - 8}' /proc/meminfo); "
            '[ "$free" -gt 0 ] && dd if=/dev/zero of=/dev/null bs=${free}M count=1 2>/dev/null; true'
        )

    def masquerade_command(self, subnet: str, out_iface: str) -> str:
        return (
            f"{NFT} 'add table ip ikedlab_nat; "
            "add chain ip ikedlab_nat post { type nat hook postrouting priority 100 ; }; "
            f'add rule ip ikedlab_nat post ip saddr {subnet} oifname "{out_iface}" masquerade\''
        )

    def unmasquerade_command(self) -> str:
        return f"{NFT} delete table ip ikedlab_nat 2>/dev/null; true"

    def ipv6_actions(
        self, addresses: list[tuple[int, str]], gateway: str | None, forwarding: bool
    ) -> list[str]:
        # nodad: the address is usable at once (duplicate address detection holds it back ~1 s otherwise).
        actions = [
            f"{IP} -6 addr replace {address} dev {self.interface_name(index)} nodad"
            for index, address in addresses
        ]
        if gateway:
            actions.append(f"{IP} -6 route replace default via {gateway}")
        actions.append(f"echo {int(forwarding)} > /proc/sys/net/ipv6/conf/all/forwarding")
        return actions

    def plain_ping_filter_command(self) -> str:
        # `meta ipsec`: the packet came through an SA (input); `rt ipsec`: its route goes into one (output).
        return (
            f"{NFT} 'add table inet ikedlab_plain_ping; "
            "add chain inet ikedlab_plain_ping input { type filter hook input priority 10 ; }; "
            "add chain inet ikedlab_plain_ping output { type filter hook output priority 10 ; }; "
            "add rule inet ikedlab_plain_ping input meta ipsec missing icmp type echo-request drop; "
            "add rule inet ikedlab_plain_ping input meta ipsec missing icmpv6 type echo-request drop; "
            "add rule inet ikedlab_plain_ping output rt ipsec missing icmp type echo-request drop; "
            "add rule inet ikedlab_plain_ping output rt ipsec missing icmpv6 type echo-request drop'"
        )

    def receive_files_command(self, channel: str, size: int, token: str) -> str:
        # No udev: the port is the one whose name is the channel's (virtio_console, loaded at boot). Opened
        # in a subshell (the control shell keeps no descriptor of it). Right after a restore QEMU has not
        # yet seen the host's end held (it looks once a second) and a read there is an end of file: one
        # byte written first waits until it has. Then `token` is said on the console; bytes before the
        # token's line on the port are an interrupted delivery's, skipped.
        return (
            f"port=$(grep -lx {shlex.quote(channel)} /sys/class/virtio-ports/*/name) && "
            'dev=/dev/$(basename "$(dirname "$port")") && '
            f"( exec 3<>\"$dev\" && printf '\\n' >&3 && echo {token} && "
            f'until IFS= read -r line <&3 && [ "$line" = {token} ]; do :; done && '
            f"head -c {int(size)} <&3 | gzip -dc | tar -xf - -C / )"
        )

    def checksum_command(self, path: str) -> str:
        return f"sha256sum {shlex.quote(path)}"

    def ping_command(
        self, address: str, count: int, timeout_s: int, interval: float = 0.2, size: int | None = None
    ) -> str:
        extra = (f" -s {size}" if size is not None else "") + (" -q" if count > 20 else "")
        return f"ping -c {count} -i {interval:g} -W {timeout_s}{extra} {shlex.quote(address)}"

    def parse_ping(self, output: str) -> PingResult:
        return parse_ping_summary(output)

    def parse_sa(self, output: str) -> SaState:
        return parse_ikectl_show_sa(output)

    def counters_command(self, host: Host) -> str:
        local = " ".join(str(i.address.ip) for i in host.interfaces)
        return f"echo 'local {local}'; {IP} -s xfrm state; {NFT} list counters table inet ikedlab"

    def parse_counters(self, output: str) -> IpsecCounters:
        return parse_linux_counters(output)

    def capture_start_command(self, kind: str, pcap: str, iface: str | None = None, bpf: str = "") -> str:
        source = f"nflog:{NFLOG_GROUP}" if kind == "decapsulated" else iface
        if source is None:
            raise ValueError("a wire capture needs an interface")
        quiet = ">/dev/null 2>&1 </dev/null"
        bpf_arg = f" {shlex.quote(bpf)}" if bpf else ""
        return (
            f"{TCPDUMP} -n -U --immediate-mode -i {shlex.quote(source)} -w {shlex.quote(pcap)}{bpf_arg} "
            f"{quiet} & echo $!"
        )

    def parse_capture(self, output: str, kind: str) -> Capture:
        return Capture(parse_tcpdump_lines(output), output)


#: OpenBSD settings the regress makes that Linux has no switch for, and why nothing is needed.
_OPENBSD_ONLY_SYSCTLS = {
    "net.inet.ipcomp.enable": "IPComp works while the ipcomp modules are loaded (every gateway loads them)",
    "net.inet.esp.udpencap_port": "the IKE daemon's NAT-T socket (iked -p) alone decides the port",
}

_SYSCTL_NOTE = """\
The guide's settings, in OpenBSD's names. Linux spells them differently, and the appliance's `sysctl`
understands both: net.inet.ip.forwarding is net.ipv4.ip_forward (set by ikedlab from the topology);
ESP and AH have no switch on Linux and work while the esp4 and ah4 modules are loaded."""

_SA_HEADER = re.compile(r"^src (\S+) dst (\S+)")
_PROTO = re.compile(r"^\s+proto (esp|ah) spi (0x[0-9a-f]+)")
_CURRENT = re.compile(r"^\s+(\d+)\(bytes\), (\d+)\(packets\)")
_COUNTER = re.compile(r"counter (esp_in|esp_out|ah_in|ah_out) \{\s*packets (\d+) bytes (\d+)", re.S)


def parse_linux_counters(text: str) -> IpsecCounters:
    """Counters from `echo local ADDRS; ip -s xfrm state; nft list counters table inet ikedlab`.

    ESP/AH packets are summed over the SAs of each direction (an SA whose destination is a local address
    is inbound): like netstat's counters they count under NAT-T too. AH also counts on the wire, where a
    stray AH packet with no SA would show.
    """
    local: set[str] = set()
    totals = {"esp_in": 0, "esp_out": 0, "ah_in": 0, "ah_out": 0, "esp_in_bytes": 0, "esp_out_bytes": 0}
    direction = proto = None
    for line in text.splitlines():
        if line.startswith("local "):
            local = set(line.split()[1:])
        elif m := _SA_HEADER.match(line):
            direction = "in" if m.group(2) in local else "out"
            proto = None
        elif m := _PROTO.match(line):
            proto = m.group(1)
        elif (m := _CURRENT.match(line)) and direction and proto:
            totals[f"{proto}_{direction}"] += int(m.group(2))
            if proto == "esp":
                totals[f"esp_{direction}_bytes"] += int(m.group(1))
    for name, packets, _bytes in _COUNTER.findall(text):
        if name.startswith("ah"):
            totals[name] = max(totals[name], int(packets))
    return IpsecCounters(**totals)
