"""10. A live capture of wan1, taken by QEMU outside the guests, is a pcap tcpdump reads: it shows the IKE
exchange of a tunnel being rebuilt and the ESP of pings across it."""

import pytest
from guide import guide

from lab.capture import captured, read_pcap

pytestmark = pytest.mark.nightly  # minutes on an emulated lab: rebuilds the tunnel inside the capture


def test_capture_of_wan1_shows_ike_and_esp(lab, evidence):
    g = guide(lab)
    with captured(lab, "wan1", into=evidence) as pcap:
        lab.restore()  # iked restarted on both gateways: a full IKE exchange crosses wan1
        assert g.initlan.ping(g.address(g.resplan), count=3).received == 3
    text = read_pcap(pcap)
    packets = g.init.platform.parse_capture(text, "wire").packets
    ike = [p for p in packets if 500 in (p.src_port, p.dst_port) or p.protocol == "IKE"]
    esp = [p for p in packets if p.protocol == "ESP"]
    assert ike, f"no IKE in {pcap}:\n{text}"
    assert len(esp) >= 6, f"3 pings should cross wan1 as 6 ESP packets; {pcap}:\n{text}"
