"""12. iked rekeys the child SAs and the IKE SA under steady traffic, and no packet is lost on the way."""

from concurrent.futures import ThreadPoolExecutor

from guide import guide

from lab.render import Lifetimes
from lab.traffic import keys, send, wait_for_rekey

CHILD_SECONDS = 15
IKE_SECONDS = 25
TRAFFIC_SECONDS = 45  # covers both rekeys, with room for iked's jitter and a busy machine
INTERVAL = 0.05
LOSS_BOUND = 0  # packets: a rekey installs the new SAs before it deletes the old ones


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
    assert traffic.lost <= LOSS_BOUND, traffic.summary()
