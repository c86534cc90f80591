"""6. With a wrong public key for init on resp, no SA comes up and resp's IKE daemon says authentication
failed, in its own words (the platform's `auth_failure`)."""

import re

import pytest
from guide import guide, wait_for_log

from lab import settings
from lab.provision import start_ike, stop_ike

# start_ike starts init once resp's iked is past its start-up: init's first exchange reaches authentication.
# Each wait below ends as soon as resp's log says so.
AUTH_FAILURE_TIMEOUT = settings.SA_TIMEOUT


@pytest.fixture
def wrong_key_on_resp(lab):
    g = guide(lab)
    # A key pair nobody uses: its public half takes the place of init's on resp.
    wrong_key = (
        "openssl ecparam -genkey -name prime256v1 -noout -out /tmp/wrong.key && "
        f"openssl ec -in /tmp/wrong.key -pubout -out {g.resp.platform.peer_pubkey_path('init.example.com')}"
    )
    with lab.reconfigured(prepare=lambda: g.resp.check(wrong_key)):
        yield


def test_wrong_public_key_means_no_tunnel(lab, wrong_key_on_resp):
    g = guide(lab)
    stop_ike([g.init, g.resp])
    start_ike([g.init, g.resp])
    failure = g.resp.platform.auth_failure_pattern("init.example.com")
    line = wait_for_log(g.resp, failure, timeout=AUTH_FAILURE_TIMEOUT)
    assert "init.example.com" in line
    for gateway in (g.init, g.resp):
        assert not gateway.sas().established, f"{gateway.name} has a tunnel with a wrong key"
    assert g.initlan.ping(g.address(g.resplan), count=2, timeout_s=1).received == 0


def test_bundle_of_the_failed_tunnel_holds_both_logs_and_no_private_key(lab, wrong_key_on_resp, tmp_path):
    import tarfile

    from lab.bundle import make_bundle

    g = guide(lab)
    stop_ike([g.init, g.resp])
    start_ike([g.init, g.resp])
    wait_for_log(
        g.resp, g.resp.platform.auth_failure_pattern("init.example.com"), timeout=AUTH_FAILURE_TIMEOUT
    )
    archive = make_bundle(lab, tmp_path / "bundle.tar.gz")
    with tarfile.open(archive) as tar:
        texts = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    for gateway in ("init", "resp"):
        assert f"hosts/{gateway}/iked.log" in texts, sorted(texts)
    assert re.search(
        g.resp.platform.auth_failure_pattern("init.example.com").encode(), texts["hosts/resp/iked.log"]
    )
    leaked = [name for name, data in texts.items() if b"PRIVATE KEY" in data]
    assert not leaked, f"private key material in {leaked}"
    assert "manifest.json" in texts and "README.md" in texts
