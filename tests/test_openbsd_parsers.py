"""The shared parsers against OpenBSD-shaped output (tests/data/openbsd/)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lab.platforms.parsers import (
    ParseError,
    parse_ikectl_show_sa,
    parse_ipsecctl_sa,
    parse_netstat_esp_ah,
    parse_ping_summary,
    parse_tcpdump_lines,
    strip_port,
)
from lab.readings import ChildSa, Flow, IpsecCounters, PingResult

DATA = Path(__file__).parent / "data" / "openbsd"


def data(name: str) -> str:
    return (DATA / name).read_text()


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


# --- ikectl show sa -----------------------------------------------------------------------------------


def test_initiator_established_each_object_once():
    state = parse_ikectl_show_sa(data("ikectl_show_sa_init.txt"))
    assert len(state.ike_sas) == 1  # iked_dstid_sas repeats it
    ike = state.ike_sas[0]
    assert (ike.local, ike.peer, ike.state) == ("192.0.2.1:500", "198.51.100.1:500", "ESTABLISHED")
    assert ike.peer_id == "FQDN/resp.example.com"
    assert ike.initiator and not ike.natt
    assert state.established


def test_child_sas_are_loaded_ones_with_outer_addresses():
    state = parse_ikectl_show_sa(data("ikectl_show_sa_init.txt"))
    assert set(state.child_sas) == {
        ChildSa(0xD1E2F3A4, "esp", "in", "198.51.100.1", "192.0.2.1"),
        ChildSa(0x5A6B7C8D, "esp", "out", "192.0.2.1", "198.51.100.1"),
    }


def test_unloaded_child_sa_is_seen_when_asked():
    state = parse_ikectl_show_sa(data("ikectl_show_sa_init.txt"), loaded_only=False)
    assert 0x0BADF00D in {c.spi for c in state.child_sas}
    assert len(state.child_sas) == 3


def test_flows_take_their_peer_from_the_ike_sa():
    state = parse_ikectl_show_sa(data("ikectl_show_sa_init.txt"))
    assert set(state.flows) == {
        Flow("in", net("10.0.2.0/24"), net("10.0.1.0/24"), "198.51.100.1"),
        Flow("out", net("10.0.1.0/24"), net("10.0.2.0/24"), "198.51.100.1"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "ikectl_show_sa_resp_natt.txt",  # " udpencap": sbin/iked/ikev2.c rev 1.394 and later (7.8, 7.9)
        "ikectl_show_sa_resp_natt_udpecap.txt",  # " udpecap": before rev 1.394 (7.5-7.7)
    ],
)
def test_responder_behind_nat(name):
    state = parse_ikectl_show_sa(data(name))
    ike = state.ike_sas[0]
    assert ike.natt and not ike.initiator
    assert ike.peer == "198.51.100.254:61512"
    assert {c.src for c in state.child_sas} == {"198.51.100.254", "198.51.100.1"}
    # the newer flow line with a "[prenat]" part parses like the older one
    assert {f.direction for f in state.flows} == {"in", "out"}
    assert state.established


def test_half_open_sa_is_not_established():
    state = parse_ikectl_show_sa(data("ikectl_show_sa_sa_init.txt"))
    assert [s.state for s in state.ike_sas] == ["SA_INIT"]
    assert state.ike_sas[0].peer_id == ""
    assert not state.established


def test_no_sas_is_empty_not_an_error():
    state = parse_ikectl_show_sa(data("ikectl_show_sa_empty.txt"))
    assert (state.ike_sas, state.child_sas, state.flows) == ((), (), ())
    assert not state.established


def test_ikectl_error_is_a_parse_error():
    with pytest.raises(ParseError, match="iked.sock"):
        parse_ikectl_show_sa(data("ikectl_show_sa_not_running.txt"))


def test_unknown_output_is_a_parse_error():
    with pytest.raises(ParseError, match="does not explain: something else entirely$"):
        parse_ikectl_show_sa("something else entirely\n")


def test_ike_sa_line_with_an_unknown_flag_raises_with_the_line():
    # Such a line once vanished while the child SAs and flows around it parsed: "no IKE SA", silently.
    text = data("ikectl_show_sa_resp_natt.txt").replace(" udpencap ", " udpfoo ")
    ike_line = next(line for line in text.splitlines() if line.startswith("iked_sas:"))
    with pytest.raises(ParseError) as caught:
        parse_ikectl_show_sa(text)
    assert str(caught.value).endswith(ike_line)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("label", ["  sa_childsas", "iked_activesas", "  sa_flows", "iked_flows"])
def test_any_line_of_any_section_that_does_not_parse_raises(label):
    text = data("ikectl_show_sa_init.txt") + f"{label}: 0x7f0c1a2d9000 something new\n"
    with pytest.raises(ParseError, match=f"{label.strip()}: 0x7f0c1a2d9000 something new"):
        parse_ikectl_show_sa(text)


@pytest.mark.parametrize(
    "printed, address",
    [("192.0.2.1:500", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"), ("[2001:db8::1]:500", "2001:db8::1")],
)
def test_strip_port(printed, address):
    assert strip_port(printed) == address


# --- netstat ------------------------------------------------------------------------------------------


def test_netstat_counts():
    assert parse_netstat_esp_ah(data("netstat_esp_ah.txt")) == IpsecCounters(12, 12, 0, 0, 1392, 1776)


def test_netstat_zero_counters():
    assert parse_netstat_esp_ah(data("netstat_esp_ah_zero.txt")) == IpsecCounters(0, 0, 0, 0, 0, 0)


def test_netstat_singular_and_ah_bytes_kept_apart():
    counters = parse_netstat_esp_ah(data("netstat_esp_ah_singular.txt"))
    assert counters == IpsecCounters(
        esp_in=1, esp_out=1, ah_in=3, ah_out=2, esp_in_bytes=116, esp_out_bytes=148
    )


def test_netstat_without_ah_section():
    esp_only = data("netstat_esp_ah.txt").split("ah:")[0]
    with pytest.raises(ParseError, match="no ah statistics"):
        parse_netstat_esp_ah(esp_only)


# --- ipsecctl -sa -------------------------------------------------------------------------------------


def test_ipsecctl_flows_and_sas():
    state = parse_ipsecctl_sa(data("ipsecctl_sa.txt"), local_addresses=["192.0.2.1", "10.0.1.1"])
    assert set(state.flows) == {
        Flow("in", net("10.0.2.0/24"), net("10.0.1.0/24"), "198.51.100.1"),
        Flow("out", net("10.0.1.0/24"), net("10.0.2.0/24"), "198.51.100.1"),
    }
    assert {(c.spi, c.direction) for c in state.child_sas} == {(0xD1E2F3A4, "in"), (0x5A6B7C8D, "out")}
    assert state.ike_sas == ()


def test_ipsecctl_empty():
    state = parse_ipsecctl_sa(data("ipsecctl_sa_empty.txt"))
    assert (state.flows, state.child_sas) == ((), ())


def test_ipsecctl_direction_unknown_without_local_addresses():
    state = parse_ipsecctl_sa(data("ipsecctl_sa.txt"))
    assert {c.direction for c in state.child_sas} == {""}


def test_ipsecctl_garbage():
    with pytest.raises(ParseError):
        parse_ipsecctl_sa("ipsecctl: pfkey: Operation not permitted\n")


# --- ping ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, result",
    [
        ("ping_openbsd_ok.txt", PingResult(5, 5, 1.108, 1.254)),
        ("ping_openbsd_loss.txt", PingResult(5, 2, 1.199, 1.25)),
        ("ping_iputils.txt", PingResult(3, 3, 1.31, 1.41)),
        ("ping_iputils_errors.txt", PingResult(3, 0)),
        ("ping_busybox.txt", PingResult(2, 2, 1.221, 1.375)),
    ],
)
def test_ping_summaries(name, result):
    assert parse_ping_summary(data(name)) == result


def test_ping_loss_property():
    assert parse_ping_summary(data("ping_openbsd_loss.txt")).loss == 3


def test_ping_without_summary():
    # sbin/ping/ping.c: errx(1, "%s", gai_strerror(error)); no "unknown host" of its own.
    with pytest.raises(ParseError, match="no summary: ping: name or service is not known$"):
        parse_ping_summary(data("ping_unknown_host.txt"))


# --- tcpdump ------------------------------------------------------------------------------------------


def test_enc0_capture():
    packets = parse_tcpdump_lines(data("tcpdump_enc0.txt"))
    assert [(p.src, p.dst, p.spi, p.protocol) for p in packets] == [
        ("10.0.1.2", "10.0.2.2", 0x5A6B7C8D, "ICMP"),
        ("10.0.2.2", "10.0.1.2", 0xD1E2F3A4, "ICMP"),
        ("10.0.1.2", "10.0.2.2", 0x5A6B7C8D, "ICMP"),
        ("10.0.2.2", "10.0.1.2", 0, "ICMP"),
    ]
    assert packets[0].summary == "icmp: echo request (encap)"
    assert packets[0].raw.startswith("12:00:01.104211 (authentic,confidential)")
    assert not any(p.udp_encapsulated or p.src_port for p in packets)


def test_enc0_capture_with_verbose_outer_pair():
    (packet,) = parse_tcpdump_lines(data("tcpdump_enc0_verbose.txt"))
    # tunnel mode: the inner pair, not the outer
    assert (packet.src, packet.dst, packet.spi, packet.protocol) == (
        "10.0.1.2",
        "10.0.2.2",
        0x5A6B7C8D,
        "ICMP",
    )


def test_openbsd_wire_capture():
    packets = parse_tcpdump_lines(data("tcpdump_wire_openbsd.txt"))
    fields = [(p.protocol, p.src, p.dst, p.spi, p.src_port, p.dst_port, p.udp_encapsulated) for p in packets]
    assert fields == [
        ("IKE", "192.0.2.1", "198.51.100.1", None, 500, 500, False),
        ("ESP", "192.0.2.1", "198.51.100.1", 0x5A6B7C8D, None, None, False),
        ("ESP", "198.51.100.1", "192.0.2.1", 0xD1E2F3A4, None, None, False),
        ("ESP", "192.0.2.1", "198.51.100.1", 0x5A6B7C8D, 4500, 4500, True),  # NAT-T: ESP inside UDP 4500
        ("ESP", "198.51.100.1", "198.51.100.254", 0xD1E2F3A4, 4500, 61512, True),  # to the NAT's port
        ("IKE", "192.0.2.1", "198.51.100.1", None, 4500, 4500, False),  # IKE on 4500 is no ESP
        ("UDP", "192.0.2.1", "198.51.100.1", None, 4500, 4500, False),  # NAT-T keepalive
        ("AH", "192.0.2.1", "198.51.100.1", 0x0BADF00D, None, None, False),
    ]


def test_openbsd_wire_capture_before_print_ipsec_1_27():
    packets = parse_tcpdump_lines(data("tcpdump_wire_openbsd_old.txt"))
    fields = [(p.protocol, p.src, p.dst, p.spi, p.udp_encapsulated) for p in packets]
    assert fields == [
        ("ESP", "192.0.2.1", "198.51.100.1", 0x5A6B7C8D, False),
        ("ESP", "192.0.2.1", "198.51.100.1", 0x5A6B7C8D, True),
    ]


def test_linux_capture():
    packets = parse_tcpdump_lines(data("tcpdump_linux.txt"))
    assert [(p.protocol, p.src, p.dst, p.spi) for p in packets] == [
        ("ICMP", "10.0.1.2", "10.0.2.2", None),
        ("ICMP", "10.0.2.2", "10.0.1.2", None),
        ("ESP", "192.0.2.1", "198.51.100.1", 0x5A6B7C8D),
        ("ESP", "192.0.2.1", "198.51.100.1", 0x5A6B7C8D),
        ("IKE", "192.0.2.1", "198.51.100.1", None),
    ]
    assert packets[0].summary == "ICMP echo request, id 7, seq 1, length 64"


def test_capture_without_packets():
    assert parse_tcpdump_lines("tcpdump: listening on enc0, link-type ENC\n0 packets captured\n") == ()
