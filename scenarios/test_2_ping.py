"""2. A ping from one LAN reaches the other, through the tunnel, both ways and without loss."""

from guide import guide


def test_initlan_reaches_resplan(lab):
    g = guide(lab)
    result = g.initlan.ping(g.address(g.resplan), count=5)
    assert (result.transmitted, result.received) == (5, 5)


def test_resplan_reaches_initlan(lab):
    g = guide(lab)
    result = g.resplan.ping(g.address(g.initlan), count=5)
    assert (result.transmitted, result.received) == (5, 5)
