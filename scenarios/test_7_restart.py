"""7. iked restarted on resp: the tunnel comes back by itself and pings pass again.

init keeps its SAs until its liveness checks (`set dpd_check_interval`, every few seconds here) show that
resp lost them; then it negotiates a new tunnel. Traffic keeps flowing from initlan while we wait, because
iked only probes a peer whose SAs carry traffic out and nothing back.
"""

import pytest
from guide import guide

from lab.provision import start_ike, stop_ike
from lab.settings import RECOVERY

# Minutes on an emulated lab: waits out its recovery deadline (a strict xfail on Linux).
pytestmark = pytest.mark.nightly

DPD_INTERVAL = 5


@pytest.fixture
def quick_liveness_checks(lab):
    with lab.reconfigured(dpd_interval=DPD_INTERVAL):
        yield


def test_tunnel_comes_back_after_iked_restarts_on_resp(lab, quick_liveness_checks, request):
    g = guide(lab)
    # A platform whose iked never probes a silent peer cannot pass: expected to fail, and must.
    lacking = [h.platform.why_not("liveness_probes") for h in (g.init, g.resp)]
    if any(lacking):
        request.applymarker(pytest.mark.xfail(strict=True, reason="; ".join(filter(None, lacking))))
    stop_ike([g.resp])
    start_ike([g.resp])
    g.initlan.wait_until(
        f"a ping from initlan reaching {g.address(g.resplan)} after resp's iked restarted",
        lambda: g.initlan.ping(g.address(g.resplan), count=1, timeout_s=1).received,
        bool,
        timeout=RECOVERY,
    )
    assert g.resp.sas().established and g.init.sas().established
