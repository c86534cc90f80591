"""libreswan on the Linux appliance: pluto and the ipsec tools in place of iked, the rest the Linux dialect's.

The kernel side is the Linux platform's and is inherited, not repeated (addresses and routes, the ESP/AH
counters, the decapsulated capture, pings). What differs is the IKE daemon: ipsec.conf rendered from the
topology (lab/templates/ipsec.conf.j2); the key pair made in pluto's NSS database (`ipsec newhostkey`), its
public half exported as PEM (`ipsec showhostkey --pem`, the SubjectPublicKeyInfo iked reads), the peer's PEM
turned into pluto's `rightpubkey=` (the same DER, base64 on one line) when pluto starts; pluto in the
foreground with a file log; SAs read from `ipsec showstates` / `ipsec trafficstatus` and the flows from the
kernel's policies, which pluto installs exactly as negotiated.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, ClassVar

from lab import render
from lab.platforms import Action, FileSpec
from lab.platforms.linux import IP, Linux
from lab.platforms.parsers import iked_identity
from lab.readings import ChildSa, Flow, IkeSa, SaState
from lab.render import LIBRESWAN_KEYS_CONF, LIBRESWAN_LOG

if TYPE_CHECKING:
    from lab.topology import Host, Topology

IPSEC = "/usr/sbin/ipsec"
PLUTO = "/usr/libexec/ipsec/pluto"
NSS_DIR = "/var/lib/ipsec/nss"
CKAID = "/etc/ipsec.d/local.ckaid"  # the CKAID of this gateway's key in the NSS database
_SECTION = "# ikedlab:"  # sa_command's section markers


class Libreswan(Linux, name="libreswan"):
    ike_conf: ClassVar[str] = "/etc/ipsec.conf"
    ike_conf_format: ClassVar[str] = "ipsec.conf"
    private_key: ClassVar[str] = NSS_DIR  # the key lives in the NSS database and never leaves it
    public_key: ClassVar[str] = "/etc/ipsec.d/local.pem"
    pubkeys_dir: ClassVar[str] = "/etc/ipsec.d/pubkeys"

    def render_ike_conf(self, topology: Topology, host: Host, **shape: Any) -> str:
        return render.libreswan_conf(topology, host, **shape)

    def ipsec_prepare_actions(self, host: Host) -> list[Action]:
        return [
            *self.kernel_ipsec_actions(),  # xfrm_user (pluto speaks XFRM over netlink) among them
            f"mkdir -p {self.pubkeys_dir} {NSS_DIR} /run/pluto /var/log",
            # No DNS in the lab: an empty resolv.conf keeps pluto and addconn from complaining at each start.
            FileSpec("/etc/resolv.conf", ""),
        ]

    def keygen_command(self) -> str:
        # newhostkey says "… ipsec showhostkey --left --ckaid CKAID": the key's handle in the database.
        nss = f"--nssdir {NSS_DIR}"
        return (
            f"test -s {self.public_key} || {{ {IPSEC} initnss {nss} >/dev/null && "
            f"ck=$({IPSEC} newhostkey {nss} --keytype ecdsa 2>&1 | sed -n 's/^.*--ckaid //p') && "
            f'[ -n "$ck" ] && echo "$ck" > {CKAID} && '
            f'{IPSEC} showhostkey {nss} --pem --ckaid "$ck" > {self.public_key}; }}'
        )

    def _keys_conf_command(self) -> str:
        """Write the conn ipsec.conf includes for its keys: ours by CKAID, the peer's from its PEM (pluto's
        `rightpubkey=` is the PEM's base64 body on one line, without the `0s` prefix)."""
        return (
            f"peer=$(ls {self.pubkeys_dir}/* 2>/dev/null | head -1); "
            f'[ -s "$peer" ] || {{ echo "no peer public key in {self.pubkeys_dir}"; false; }} && '
            f"printf 'conn ikedlab-keys\\n\\tleftckaid=%s\\n\\trightpubkey=%s\\n' "
            f'"$(cat {CKAID})" "$(grep -v -- ----- "$peer" | tr -d \'\\n\')" > {LIBRESWAN_KEYS_CONF}'
        )

    def ike_check_command(self, path: str | None = None) -> str:
        # addconn parses the file (includes too) without pluto; pluto judges the rest as the conn loads.
        conf = path or self.ike_conf
        return (
            f"{self._keys_conf_command()} && /usr/libexec/ipsec/addconn --checkconfig --config {conf} && "
            "echo 'configuration OK (pluto judges the connection as it loads)'"
        )

    def ike_start_command(self) -> str:
        # pluto in its own session, then the connection loaded; the active side initiates it without
        # waiting (the tunnel is awaited by ikedlab, as with iked).
        conn = f"$(sed -n 's/^conn //p' {self.ike_conf} | head -1)"
        return (
            f"{self._keys_conf_command()} && mkdir -p /run/pluto && "
            f"{{ setsid {PLUTO} --nofork --config {self.ike_conf} --logfile {LIBRESWAN_LOG} "
            f">>{LIBRESWAN_LOG} 2>&1 </dev/null & }}; "
            f"n=0; until {IPSEC} whack --status >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 300 ] && break; "
            f'sleep 0.1; done; conn={conn}; {IPSEC} add "$conn" && '
            f"if grep -q '^# ikedlab: active' {self.ike_conf}; then "
            f'{IPSEC} whack --name "$conn" --initiate --asynchronous; fi'
        )

    def ike_stop_command(self) -> str:
        return (
            f"{IPSEC} whack --shutdown >/dev/null 2>&1; n=0; "
            "while pidof pluto >/dev/null && [ $n -lt 100 ]; do n=$((n+1)); sleep 0.1; done; "
            "! pidof pluto >/dev/null"
        )

    def ike_debug_command(self) -> str:
        return f"{self._keys_conf_command()} && {PLUTO} --nofork --stderrlog --config {self.ike_conf}"

    def ike_log_command(self) -> str:
        return f"cat {LIBRESWAN_LOG} 2>/dev/null"

    def ike_running_command(self) -> str:
        return "pidof pluto >/dev/null"

    def daemon_version_command(self) -> str:
        return f"{IPSEC} --version"

    def daemon_label(self, manifest: dict) -> str:
        return f"libreswan {manifest.get('packages', {}).get('libreswan', '?')}"

    def sa_command(self) -> str:
        # pluto's states (IKE and child SAs, SPIs, peer), the peer's id, then the flows as the kernel has
        # them (pluto installs what was negotiated).
        return (
            f"echo '{_SECTION} showstates'; {IPSEC} showstates; "
            f"echo '{_SECTION} trafficstatus'; {IPSEC} trafficstatus; "
            f"echo '{_SECTION} xfrm policy'; {IP} xfrm policy"
        )

    def parse_sa(self, output: str) -> SaState:
        return parse_libreswan_sas(output)


# pluto 5 prints `#1: "conn":500 ESTABLISHED_IKE_SA (…)` (older: `000 #1: … STATE_V2_ESTABLISHED_IKE_SA`);
# an instance of a template conn adds `[1] 192.0.2.1:500`.
_STATE = re.compile(
    r'^(?:000 )?#(?P<serial>\d+): "(?P<conn>[^"]+)"(?:\[\d+\])?(?: (?P<addr>[\d.]+))?:(?P<port>\d+) '
    r"(?:STATE_)?(?:V2_)?(?P<state>[A-Z0-9_]+)(?: \((?P<what>[^)]*)\))?(?P<rest>.*)$"
)
_CHILD_SPIS = re.compile(
    r'^(?:000 )?#(?P<serial>\d+): "[^"]+"\S*(?: [\d.]+)? esp\.(?P<out>[0-9a-f]+)@(?P<peer>[\d.]+) '
    r"esp\.(?P<inb>[0-9a-f]+)@(?P<local>[\d.]+)"
)
_OF_IKE = re.compile(r"IKE SA #(\d+)")
_TRAFFIC_ID = re.compile(r"^(?:000 )?#(?P<serial>\d+): .*\bid='@?(?P<id>[^']*)'")
_POLICY = re.compile(r"^src (?P<src>\S+) dst (?P<dst>\S+)")
_POLICY_DIR = re.compile(r"^\s+dir (?P<dir>in|out|fwd) ")
_TMPL = re.compile(r"^\s+tmpl src (?P<src>\S+) dst (?P<dst>\S+)")


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = sections.setdefault("", [])
    for line in text.splitlines():
        if line.startswith(_SECTION):
            current = sections.setdefault(line.removeprefix(_SECTION).strip(), [])
        else:
            current.append(line)
    return sections


def parse_libreswan_sas(text: str) -> SaState:
    """`ipsec showstates`, `ipsec trafficstatus` and `ip xfrm policy` (sa_command's sections) -> SaState.

    An IKE SA is a `…_IKE_SA` state; its child SAs are the states naming it (`IKE SA #N`), each with a line
    of SPIs: `esp.OUT@peer esp.IN@local`. An IKE SA is ESTABLISHED once pluto says `ESTABLISHED_IKE_SA`.
    The peer's id comes from trafficstatus (`id='@resp.example.com'`); the flows are the kernel's policies
    that lead into the tunnel (a template), `fwd` reported as `in` as the Linux platform does.
    """
    parts = _sections(text)
    ike: dict[str, dict[str, str]] = {}
    child_of: dict[str, str] = {}
    spis: dict[str, re.Match[str]] = {}
    for line in parts.get("showstates", []) + parts.get("", []):
        if m := _CHILD_SPIS.match(line):
            spis[m["serial"]] = m
        elif m := _STATE.match(line):
            if m["state"].endswith("IKE_SA") or m["state"].startswith(("PARENT", "IKE")):
                ike[m["serial"]] = {"state": m["state"], "port": m["port"], "conn": m["conn"]}
            elif of := _OF_IKE.search(m["rest"]):
                if m["state"].endswith("ESTABLISHED_CHILD_SA"):
                    child_of[m["serial"]] = of.group(1)
    ids = {m["serial"]: m["id"] for line in parts.get("trafficstatus", []) if (m := _TRAFFIC_ID.match(line))}

    children: list[ChildSa] = []
    ike_sas: list[IkeSa] = []
    for serial, sa in ike.items():
        mine = [c for c, parent in child_of.items() if parent == serial and c in spis]
        local = peer = ""
        peer_id = ""
        for c in mine:
            m = spis[c]
            local, peer = m["local"], m["peer"]
            peer_id = peer_id or ids.get(c, "")
            children.append(ChildSa(int(m["out"], 16), "esp", "out", local, peer))
            children.append(ChildSa(int(m["inb"], 16), "esp", "in", peer, local))
        ike_sas.append(
            IkeSa(
                local=f"{local}:{sa['port']}" if local else "",
                peer=f"{peer}:{sa['port']}" if peer else "",
                state="ESTABLISHED" if sa["state"].endswith("ESTABLISHED_IKE_SA") else sa["state"],
                peer_id=iked_identity(peer_id) if peer_id else "",
                natt=sa["port"] == "4500",
            )
        )
    return SaState(tuple(ike_sas), tuple(children), tuple(_kernel_flows(parts.get("xfrm policy", []))))


def _kernel_flows(lines: list[str]) -> list[Flow]:
    """`ip xfrm policy` -> the flows into the tunnel: policies with a template (`tmpl src … dst …`)."""
    flows: list[Flow] = []
    src = dst = direction = None
    for line in lines:
        if m := _POLICY.match(line):
            src, dst, direction = m["src"], m["dst"], None
        elif (m := _POLICY_DIR.match(line)) and src:
            direction = m["dir"]
        elif (m := _TMPL.match(line)) and src and dst and direction:
            outbound = direction == "out"
            try:
                flow = Flow(
                    "out" if outbound else "in",
                    ipaddress.IPv4Network(src),
                    ipaddress.IPv4Network(dst),
                    m["dst"] if outbound else m["src"],
                )
            except ValueError:  # an IPv6 policy: the guide's lab is IPv4
                continue
            if flow not in flows:
                flows.append(flow)
    return flows
