"""strongSwan on the Linux appliance: charon and swanctl in place of iked, the rest the Linux dialect's.

The kernel side is the Linux platform's and is inherited, not repeated: addresses and routes, the ESP/AH
counters from `ip -s xfrm state` and nftables, the decapsulated capture from nflog, pings. What differs is
the IKE daemon: swanctl.conf rendered from the topology (lab/templates/swanctl.conf.j2), keys where swanctl
looks for them (PEM, the same SubjectPublicKeyInfo iked uses, so public halves cross unchanged), charon
started in the foreground with a file log, and SAs read from `swanctl --list-sas`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, ClassVar

from lab import render
from lab.platforms import Action, FileSpec
from lab.platforms.linux import Linux
from lab.platforms.parsers import iked_identity
from lab.readings import ChildSa, Flow, IkeSa, SaState

if TYPE_CHECKING:
    from lab.topology import Host, Topology

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
CHARON_LOG = "/var/log/charon.log"
# charon-systemd logs to the journal, which the appliance does not have: a file log instead, with IKE and
# configuration at level 2 so authentication and proposal choices show. swanctl loads only the plugins the
# appliance has (its default list names two dozen more, each a warning on every call). Shorter retransmits:
# see swanctl.conf.j2's keyingtries.
_SETTINGS = f"""\
swanctl {{
	load = pem pkcs1 pkcs8 x509 pubkey openssl nonce
}}
charon-systemd {{
	# Give up on an unanswered exchange after ~25 s instead of ~165 s, so a retry (keyingtries = 0) comes
	# within the lab's wait for the tunnel.
	retransmit_tries = 3
	retransmit_timeout = 2.0
	journal {{
		default = -1
	}}
	filelog {{
		ikedlab {{
			path = {CHARON_LOG}
			time_format = %b %e %T
			default = 1
			ike = 2
			cfg = 2
			flush_line = yes
		}}
	}}
}}
"""


class StrongSwan(Linux, name="strongswan"):
    ike_conf: ClassVar[str] = "/etc/swanctl/conf.d/ikedlab.conf"
    ike_conf_format: ClassVar[str] = "swanctl.conf"
    ca_dir: ClassVar[str] = "/etc/swanctl/x509ca"
    certs_dir: ClassVar[str] = "/etc/swanctl/x509"
    private_key: ClassVar[str] = "/etc/swanctl/ecdsa/local.pem"
    public_key: ClassVar[str] = "/etc/swanctl/pubkey/local.pem"
    pubkeys_dir: ClassVar[str] = "/etc/swanctl/pubkey"

    def render_ike_conf(self, topology: Topology, host: Host, **shape: Any) -> str:
        return render.swanctl_conf(topology, host, **shape)

    def ipsec_prepare_actions(self, host: Host) -> list[Action]:
        return [
            *self.kernel_ipsec_actions(),  # xfrm_user (charon speaks XFRM over netlink) among them
            FileSpec("/etc/strongswan.d/ikedlab.conf", _SETTINGS),
            "mkdir -p /etc/swanctl/ecdsa /etc/swanctl/pubkey /etc/swanctl/conf.d",
            "chmod 700 /etc/swanctl/ecdsa",
        ]

    def ike_check_command(self, path: str | None = None) -> str:
        # No offline checker for swanctl.conf: `swanctl --load-all` judges it when the daemon starts, and
        # the start fails with swanctl's complaint on a bad file. Here: only that it was written.
        return f"test -s {path or self.ike_conf} && echo 'configuration OK (swanctl judges it at start)'"

    def ike_start_command(self) -> str:
        # charon in its own session, then every connection, key and credential loaded over vici; an active
        # side initiates as its connection loads (start_action = start).
        return (
            f"mkdir -p /var/log; setsid {CHARON} >>{CHARON_LOG} 2>&1 </dev/null & "
            f"n=0; until {SWANCTL} --stats >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 300 ] && break; "
            f"sleep 0.1; done; {SWANCTL} --load-all --noprompt"
        )

    def ike_stop_command(self) -> str:
        return (
            "killall charon-systemd 2>/dev/null; n=0; "
            "while pidof charon-systemd >/dev/null && [ $n -lt 100 ]; do n=$((n+1)); sleep 0.1; done; "
            "! pidof charon-systemd >/dev/null"
        )

    def ike_log_command(self) -> str:
        return f"cat {CHARON_LOG} 2>/dev/null"

    def ike_running_command(self) -> str:
        return "pidof charon-systemd >/dev/null"

    def daemon_label(self, manifest: dict) -> str:
        return f"strongSwan {manifest.get('packages', {}).get('charon-systemd', '?')}"

    def sa_command(self) -> str:
        return f"{SWANCTL} --list-sas"

    def parse_sa(self, output: str) -> SaState:
        return parse_swanctl_list_sas(output)


_IKE = re.compile(r"^(?P<name>[\w.-]+): #\d+, (?P<state>[A-Z_]+), IKEv\d, \w+_i(?P<i>\*?) \w+_r(?P<r>\*?)")
_ENDPOINT = re.compile(r"^  (?P<side>local|remote)\s+'(?P<id>[^']*)' @ (?P<addr>[^\[\s]+)\[(?P<port>\d+)\]")
_CHILD = re.compile(
    r"^  (?P<name>[\w.-]+): #\d+, reqid \d+, (?P<state>[A-Z_]+), (?P<mode>[A-Z]+)(?P<udp>-in-UDP)?,"
)
_CHILD_SPI = re.compile(r"^    (?P<dir>in|out)\s+(?P<spi>[0-9a-f]{8})")
_CHILD_TS = re.compile(r"^    (?P<side>local|remote)\s+(?P<ts>.+)$")


def parse_swanctl_list_sas(text: str) -> SaState:
    """`swanctl --list-sas` -> the IKE SAs, their installed child SAs, and the flows each child covers.

    The IKE line marks our own SPI with `*` (`…_i* …_r`: we initiated). A child's `local`/`remote` lines list
    its traffic selectors: every local-remote pair is a flow out, and its mirror a flow in.
    """
    ike_sas: list[IkeSa] = []
    children: list[ChildSa] = []
    flows: list[Flow] = []
    ike: dict[str, str] = {}
    child: dict[str, object] | None = None

    def close_ike() -> None:
        if ike:
            ike_sas.append(
                IkeSa(
                    local=f"{ike['local']}:{ike['local_port']}",
                    peer=f"{ike['remote']}:{ike['remote_port']}",
                    state=ike["state"],
                    peer_id=iked_identity(ike.get("remote_id", "")),
                    initiator=ike["initiator"] == "yes",
                    natt=ike.get("remote_port") == "4500" or ike.get("natt") == "yes",
                )
            )

    for line in text.splitlines():
        if m := _IKE.match(line):
            close_ike()
            ike = {"state": m["state"], "initiator": "yes" if m["i"] else "no"}
            child = None
        elif (m := _ENDPOINT.match(line)) and ike:
            side = m["side"]
            ike[side], ike[f"{side}_port"], ike[f"{side}_id"] = m["addr"], m["port"], m["id"]
        elif (m := _CHILD.match(line)) and ike:
            child = {"installed": m["state"] == "INSTALLED", "local": [], "remote": []}
            if m["udp"]:
                ike["natt"] = "yes"
        elif (m := _CHILD_SPI.match(line)) and child is not None and child["installed"]:
            inbound = m["dir"] == "in"
            src, dst = (ike["remote"], ike["local"]) if inbound else (ike["local"], ike["remote"])
            children.append(ChildSa(int(m["spi"], 16), "esp", m["dir"], src, dst))
        elif (m := _CHILD_TS.match(line)) and child is not None and child["installed"]:
            nets = [ipaddress.IPv4Network(ts.split("[")[0]) for ts in m["ts"].split() if "." in ts]
            child[m["side"]] = nets
            if m["side"] == "remote":
                for here in child["local"]:  # type: ignore[attr-defined]
                    for there in nets:
                        flows.append(Flow("out", here, there, ike["remote"]))
                        flows.append(Flow("in", there, here, ike["remote"]))
    close_ike()
    return SaState(tuple(ike_sas), tuple(children), tuple(flows))
