"""11. A running lab takes a new iked.conf without a new `up`: resp limited to aes-128 child SAs, and the
tunnel comes back with them; a file iked rejects is refused with iked's own words and changes nothing."""

import pytest
from guide import guide, wait_for_log

from lab.errors import ProvisionError
from lab.provision import rendered_ike_conf
from lab.reconfigure import reconfigure

# Minutes on an emulated lab: restarts iked with a new proposal and waits for the tunnel.
pytestmark = pytest.mark.nightly

AES_128 = "childsa enc aes-128 auth hmac-sha2-512"


def test_reconfigure_changes_the_child_sa_proposal(lab):
    g = guide(lab)
    assert lab.topology
    normal = rendered_ike_conf(lab.topology, lab.platforms, "resp", lab.options)
    limited = normal.replace("\n\tsrcid ", f"\n\t{AES_128} \\\n\tsrcid ", 1)
    assert AES_128 in limited
    with lab.reconfigured():  # the rendered file and a fresh tunnel afterwards
        reconfigure(lab, "resp", limited)
        line = wait_for_log(g.resp, r"loaded SPIs: .*\(enc aes-128 auth hmac-sha2-512\)", timeout=30)
        assert "aes-128" in line
        assert g.initlan.ping(g.address(g.resplan), count=3).received == 3


def test_a_file_iked_rejects_is_refused_before_anything_changes(lab):
    g = guide(lab)
    before = g.resp.sas()
    with pytest.raises(ProvisionError, match="iked rejects"):
        reconfigure(lab, "resp", "ikev2 'broken' esp from nowhere\n")
    assert g.resp.sas().ike_sas == before.ike_sas, "the running iked was touched"
