"""The OpenBSD dialect: what it writes and runs for the guide's hosts, and how it reads the answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import topology
from lab.errors import IkedlabError
from lab.platforms import FileSpec, Platform
from lab.platforms.openbsd import LAB_ROOT_PASSWORD, OpenBSD, parse_iked_started
from lab.readings import IpsecCounters, PingResult

DATA = Path(__file__).parent / "data" / "openbsd"


@pytest.fixture(scope="module")
def guide() -> topology.Topology:
    return topology.load(None, ("openbsd", "linux"))


@pytest.fixture
def obsd() -> OpenBSD:
    return OpenBSD()


def files(actions: list) -> dict[str, FileSpec]:
    return {a.path: a for a in actions if isinstance(a, FileSpec)}


def commands(actions: list) -> list[str]:
    return [a for a in actions if isinstance(a, str)]


def test_registered_under_its_name():
    assert Platform._registry["openbsd"] is OpenBSD
    assert OpenBSD.name == "openbsd"


def test_identity_and_login(obsd):
    assert obsd.interface_name(0) == "vio0"
    assert obsd.login.user == "root"
    assert obsd.login.password == LAB_ROOT_PASSWORD
    assert obsd.peer_pubkey_path("resp.example.com") == "/etc/iked/pubkeys/fqdn/resp.example.com"


def test_gateway_network_files(obsd, guide):
    written = files(obsd.network_actions(guide.host("init")))
    assert written["/etc/hostname.vio0"].content == "inet 192.0.2.1 255.255.255.0\nup\n"
    assert written["/etc/hostname.vio1"].content == "inet 10.0.1.1 255.255.255.0\nup\n"
    assert written["/etc/hostname.vio0"].mode == 0o640
    assert written["/etc/mygate"].content == "192.0.2.254\n"
    assert written["/etc/sysctl.conf"].content.splitlines() == [
        "net.inet.ip.forwarding=1",
        "net.inet.esp.enable=1",
        "net.inet.ah.enable=1",
    ]
    assert written["/etc/myname"].content == "init\n"


def test_gateway_network_applied_live(obsd, guide):
    run = commands(obsd.network_actions(guide.host("init")))
    assert "sh /etc/netstart vio0 vio1" in run
    assert any(c.endswith("route -qn add default 192.0.2.254") for c in run)
    assert "sysctl net.inet.ip.forwarding=1" in run
    assert "sysctl net.inet.esp.enable=1" in run
    # files are written before netstart reads them
    actions = obsd.network_actions(guide.host("init"))
    netstart = actions.index("sh /etc/netstart vio0 vio1")
    assert all(actions.index(f) < netstart for f in files(actions).values())


def test_no_forwarding_no_gateway(obsd, guide):
    actions = obsd.network_actions(guide.host("inet"))
    written = files(actions)
    assert "/etc/mygate" not in written
    assert "forwarding" in written["/etc/sysctl.conf"].content  # inet routes between the two wans

    lan = obsd.network_actions(guide.host("initlan"))
    assert "net.inet.ip.forwarding" not in files(lan)["/etc/sysctl.conf"].content
    assert "sysctl net.inet.ip.forwarding=1" not in commands(lan)


def test_ipsec_prepare(obsd, guide):
    actions = obsd.ipsec_prepare_actions(guide.host("init"))
    joined = "\n".join(commands(actions))
    assert "mkdir -p /etc/iked/private /etc/iked/pubkeys/fqdn" in joined
    assert "chmod 700 /etc/iked/private" in joined
    # the keys: /etc/rc made them at boot; the base keygen_command (run by provisioning) is the fallback
    assert "prime256v1" in obsd.keygen_command() and obsd.keygen_command().startswith("test -s")


def test_iked_commands(obsd):
    assert obsd.ike_start_command() == "rcctl enable iked && rcctl start iked"
    assert obsd.ike_stop_command() == "rcctl stop iked"
    assert "/var/log/daemon" in obsd.ike_log_command()
    assert obsd.ike_check_command() == "iked -n -f /etc/iked.conf"


@pytest.mark.parametrize(
    "output, ok", [("iked(ok)\n", True), ("", True), ("iked(failed)\n", False), ("rcctl: bad\n", False)]
)
def test_iked_start_judge(output, ok):
    assert parse_iked_started(output) is ok


def test_checksum(obsd):
    assert obsd.checksum_command("/etc/iked.conf") == "sha256 -q /etc/iked.conf"
    assert obsd.parse_checksum(
        "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n"
    ).startswith("9f86d0")


def test_ping(obsd):
    assert obsd.ping_command("10.0.2.2", 5, 2) == "ping -n -c 5 -i 0.2 -w 2 10.0.2.2"
    assert obsd.ping_command("10.0.2.2", 1, 0) == "ping -n -c 1 -i 0.2 -w 1 10.0.2.2"
    assert obsd.parse_ping((DATA / "ping_openbsd_ok.txt").read_text()) == PingResult(5, 5, 1.108, 1.254)


def test_sa_and_counters(obsd, guide):
    assert obsd.sa_command() == "ikectl show sa"
    assert obsd.parse_sa((DATA / "ikectl_show_sa_init.txt").read_text()).established
    assert obsd.counters_command(guide.host("init")) == "netstat -s -p esp; netstat -s -p ah"
    assert obsd.parse_counters((DATA / "netstat_esp_ah.txt").read_text()) == IpsecCounters(
        12, 12, 0, 0, 1392, 1776
    )


def test_decapsulated_capture_uses_enc0(obsd):
    command = obsd.capture_start_command("decapsulated", "/tmp/enc0.pcap", bpf="icmp")
    assert command.startswith("tcpdump -n -l -i enc0 -w /tmp/enc0.pcap icmp ")
    assert "& echo $!" in command


def test_wire_capture_on_named_interface(obsd):
    command = obsd.capture_start_command("wire", "/tmp/w.pcap", iface="vio0", bpf="esp or udp port 500")
    assert command.startswith("tcpdump -n -l -i vio0 -w /tmp/w.pcap 'esp or udp port 500' ")
    with pytest.raises(IkedlabError, match="interface"):
        obsd.capture_start_command("wire", "/tmp/w.pcap")
    with pytest.raises(IkedlabError, match="unknown capture kind"):
        obsd.capture_start_command("sideways", "/tmp/w.pcap")


def test_parse_capture(obsd):
    capture = obsd.parse_capture((DATA / "tcpdump_enc0.txt").read_text(), "decapsulated")
    assert len(capture.packets) == 4
    assert all(p.spi is not None for p in capture.packets)
    assert capture.notes == []
    assert obsd.capture_read_command("/tmp/enc0.pcap") == "tcpdump -n -r /tmp/enc0.pcap"


def test_masquerade_rule_follows_pfctl_grammar(obsd):
    # sbin/pfctl/parse.y: pfrule is `action dir logquick interface af proto fromto filter_opts`, where
    # `match` is an action, `to` may be left out (any), and `nat-to redirpool` is a filter option whose
    # pool may be an interface in parentheses (its address, followed when it changes). A bare `pass` is
    # `pass all`. The rules go to `pfctl -f -` as one ruleset.
    command = obsd.masquerade_command("192.0.2.0/24", "vio1")
    assert command.endswith("| pfctl -f -")
    rules = command.split("'")[1].split("\\n")
    assert rules == ["pass", "match out on vio1 inet from 192.0.2.0/24 nat-to (vio1)", ""]
