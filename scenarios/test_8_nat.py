"""8. NAT traversal: inet masquerades init's side; the tunnel comes up over UDP 4500, ESP inside UDP."""

import pytest
from guide import guide


@pytest.fixture
def nat_on_inet(lab):
    g = guide(lab)
    if not g.inet.platform.can("masquerade"):
        pytest.skip(g.inet.platform.why_not("masquerade"))
    wan1 = lab.topology.links["wan1"].subnet
    # Behind NAT, init arrives from inet's address: resp must accept its peer from anywhere.
    with lab.reconfigured(
        prepare=lambda: g.inet.check(g.inet.platform.masquerade_command(str(wan1), g.inet.interface("wan2"))),
        undo=lambda: g.inet.check(g.inet.platform.unmasquerade_command()),
        peer_any=("resp",),
    ):
        yield


def test_tunnel_through_nat_uses_udp_encapsulation(lab, nat_on_inet):
    g = guide(lab)
    ike = g.init.sas().ike_sas[0]
    assert ike.natt, f"init does not see NAT-T on its IKE SA: {ike}"
    with g.inet.capture_wire(g.inet.interface("wan2"), bpf="ip") as box:
        assert g.initlan.ping(g.address(g.resplan), count=3).received == 3
    capture = box[0]
    esp = [p for p in capture.packets if p.protocol == "ESP"]
    assert len(esp) >= 6, f"the pings did not cross as ESP:\n{capture.text}"
    bare = [p.raw for p in esp if not p.udp_encapsulated]
    assert not bare, "bare ESP behind NAT:\n" + "\n".join(bare)
    # One end of each is resp's port 4500; the other may be the port the NAT chose (pf's nat-to picks a
    # new source port unless told static-port), so only 4500 on one side is certain.
    off_port = [p.raw for p in esp if 4500 not in (p.src_port, p.dst_port)]
    assert not off_port, "ESP off port 4500:\n" + "\n".join(off_port)
