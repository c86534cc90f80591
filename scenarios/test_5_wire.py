"""5. On the Internet between the gateways there is only IKE and ESP, never a LAN address."""

from guide import guide

IKE_PORTS = {500, 4500}


def test_internet_carries_only_ike_and_esp_between_the_gateways(lab):
    g = guide(lab)
    gateways = {g.public(g.init), g.public(g.resp)}
    with g.inet.capture_wire(g.inet.interface("wan1"), bpf="ip") as box:
        assert g.initlan.ping(g.address(g.resplan), count=3).received == 3
    capture = box[0]
    for p in capture.packets:
        assert {p.src, p.dst} <= gateways, f"not between the gateways: {p.raw}"
        is_ike = p.protocol in ("IKE", "UDP") and {p.src_port, p.dst_port} <= IKE_PORTS
        assert p.protocol == "ESP" or is_ike, f"neither IKE nor ESP: {p.raw}"
    esp = [p for p in capture.packets if p.protocol == "ESP"]
    assert len(esp) >= 6, (
        f"3 echo requests and 3 replies should cross as ESP; the capture on inet:\n{capture.text}"
    )
