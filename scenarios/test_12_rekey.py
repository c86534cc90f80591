"""12. iked rekeys the child SAs and the IKE SA under steady traffic, and loses at most a stated few packets.

The bound is measured, not hoped for: OpenIKED portable on Linux (PF_KEY) lost 9 of 900 echo requests
(20 a second) across two child SA rekeys and one IKE SA rekey under software emulation. More than that is
a regression worth a report."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from guide import guide

from lab.render import Lifetimes
from lab.traffic import keys, send, wait_for_rekey

# Minutes on an emulated lab: waits for two child and one IKE rekey under traffic.
pytestmark = pytest.mark.nightly

CHILD_SECONDS = 15
IKE_SECONDS = 25
TRAFFIC_SECONDS = 45  # covers both rekeys, with room for iked's jitter and a busy machine
INTERVAL = 0.05
LOSS_BOUND = 0.02  # of the packets sent: 9 of 900 measured (see above)


def test_rekey_under_traffic_loses_nothing(lab):
    g = guide(lab)
    with lab.reconfigured(lifetimes=Lifetimes(ike_seconds=IKE_SECONDS, child_seconds=CHILD_SECONDS)):
        before = {gw.name: keys(gw) for gw in (g.init, g.resp)}
        with ThreadPoolExecutor(max_workers=1) as pool:
            stream = pool.submit(
                send, g.initlan, g.address(g.resplan), seconds=TRAFFIC_SECONDS, size=500, interval=INTERVAL
            )
            for gw in (g.init, g.resp):
                wait_for_rekey(gw, before[gw.name], ike=True, timeout=2 * IKE_SECONDS + 60)
            traffic = stream.result()
    assert traffic.transmitted > 0, traffic.summary()
    assert traffic.lost <= LOSS_BOUND * traffic.transmitted, traffic.summary()
