"""4. ESP counters rise by at least the number of pings on both gateways; the AH counters stay flat."""

from guide import guide

PINGS = 5


def test_esp_rises_ah_stays_flat(lab):
    g = guide(lab)
    before = {gw.name: gw.ipsec_counters() for gw in (g.init, g.resp)}
    assert g.initlan.ping(g.address(g.resplan), count=PINGS).received == PINGS
    for gw in (g.init, g.resp):
        b, a = before[gw.name], gw.ipsec_counters()
        assert a.esp_out - b.esp_out >= PINGS, f"{gw.name}: ESP output {b.esp_out} -> {a.esp_out}"
        assert a.esp_in - b.esp_in >= PINGS, f"{gw.name}: ESP input {b.esp_in} -> {a.esp_in}"
        assert (a.ah_in, a.ah_out) == (b.ah_in, b.ah_out), f"{gw.name}: AH moved {b} -> {a}"
