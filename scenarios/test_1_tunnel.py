"""1. The tunnel is established: on both gateways an ESTABLISHED IKE SA, child SAs both ways, the flows."""

import ipaddress

from guide import guide


def net(address: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(address)


def test_ike_sa_established_with_child_sas_in_both_directions(lab):
    g = guide(lab)
    for gateway in (g.init, g.resp):
        sas = gateway.sas()
        assert [s.state for s in sas.ike_sas] == ["ESTABLISHED"], f"{gateway.name}: {sas.ike_sas}"
        assert {c.direction for c in sas.child_sas if c.protocol == "esp"} == {"in", "out"}, gateway.name


def test_flows_join_each_lan_to_the_other_lan_and_to_the_peer_gateway(lab):
    g = guide(lab)
    for gateway, peer in ((g.init, g.resp), (g.resp, g.init)):
        mine, theirs = g.lan(gateway, lab), g.lan(peer, lab)
        peer_gateway = net(f"{g.public(peer)}/32")
        flows = {(f.direction, f.src, f.dst) for f in gateway.sas().flows}
        expected = {
            ("out", mine, theirs),
            ("in", theirs, mine),  # LAN to LAN
            ("out", mine, peer_gateway),
            ("in", peer_gateway, mine),  # LAN to the peer gateway
        }
        assert expected <= flows, f"{gateway.name} lacks flows {expected - flows}"
