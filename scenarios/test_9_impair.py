"""9. The emulated Internet can be made worse: 100 ms of delay on wan1 (each way) adds at least 200 ms to a
round trip across the tunnel, and clearing it takes that away again."""

import pytest
from guide import guide

from lab.impair import ROUTER, impaired

PINGS = 10
DELAY_MS = 100


def min_rtt(g) -> float:
    ping = g.initlan.ping(g.address(g.resplan), count=PINGS)
    assert ping.received > 0 and ping.rtt_min_ms is not None, f"no reply across the tunnel: {ping}"
    return ping.rtt_min_ms


def test_delay_on_wan1_raises_the_round_trip_and_clearing_removes_it(lab):
    g = guide(lab)
    if not g.inet.platform.can("link_impairment"):
        pytest.skip(g.inet.platform.why_not("link_impairment"))
    # The fastest of several pings: the emulated guests add noise, never speed.
    before = min_rtt(g)
    with impaired(lab, "wan1", delay_ms=DELAY_MS):
        during = min_rtt(g)
    after = min_rtt(g)
    assert during - before >= 2 * DELAY_MS, f"{ROUTER}'s delay did not show: {before:.1f} -> {during:.1f} ms"
    assert after < before + DELAY_MS, f"the delay stayed after clearing: {before:.1f} -> {after:.1f} ms"
