"""9. The emulated Internet can be made worse: with 100 ms of delay on wan1 (each way) no round trip across
the tunnel is faster than 200 ms, where the fastest took under 100 ms before, and clearing it takes that away.

netem's delay is a floor under every packet, so the fastest of several pings shows it. The lab's own round
trip is compared to a bound, not subtracted: under software emulation its fastest ping varies by tens of
milliseconds between runs of ten (seen: 18 ms before, 9 ms after, 214.6 ms with the delay: a difference of
196.6 ms that said nothing about the delay).
"""

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
    assert before < DELAY_MS, f"the lab is too slow to measure a delay: fastest round trip {before:.1f} ms"
    assert during >= 2 * DELAY_MS, f"{ROUTER}'s delay did not show: {before:.1f} -> {during:.1f} ms"
    assert after < DELAY_MS, f"the delay stayed after clearing: {before:.1f}, {during:.1f}, {after:.1f} ms"
