"""Evidence that can be published. With a pre-shared key (hex, as iked.conf allows) on both gateways the
tunnel comes up on the users' files as given; neither a published bundle nor the scenario's evidence holds
the PSK or an SA key the kernels hold, and a bundle made with --show-secrets gives the files back byte for
byte. (`make test` then looks for every key and PSK of the run in all the evidence: lab/leakcheck.py.)"""

import secrets
import shutil
import tarfile

from guide import guide

from lab import redact
from lab.bundle import make_bundle
from lab.provision import rendered_ike_conf
from lab.replay import open_bundle


def test_a_psk_lab_leaves_no_key_in_a_published_bundle_and_replays_byte_for_byte(lab, evidence, tmp_path):
    g = guide(lab)
    assert lab.topology
    psk = "0x" + secrets.token_hex(32)
    confs = {
        gw.name: rendered_ike_conf(lab.topology, lab.platforms, gw.name, lab.options).rstrip("\n")
        + f" \\\n\tpsk {psk}\n"
        for gw in (g.init, g.resp)
    }
    with lab.reconfigured(ike_conf=confs):  # the users' files the lab runs now: what a bundle packs
        try:
            for gw in (g.init, g.resp):
                assert gw.read_file(gw.platform.ike_conf) == confs[gw.name], f"{gw.name} runs another file"
            assert g.initlan.ping(g.address(g.resplan), count=3).received == 3
            keys = set()
            for gw in (g.init, g.resp):
                keys |= redact.found(gw.run(gw.platform.kernel_ipsec_command()).output)
            assert len(keys) >= 4, "the kernels hold no SA keys to look for"

            published = make_bundle(lab, evidence / "bundle.tar.gz", show_secrets=False)
            with tarfile.open(published) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
            for name, data in members.items():
                digits = "".join(c for c in data.decode(errors="replace").lower() if c in "0123456789abcdef")
                assert psk[2:] not in digits, f"{name} holds the PSK"
                assert not [k for k in keys if k in digits], f"{name} holds an SA key"
            user = next(data for name, data in members.items() if name.endswith("user/resp.iked.conf"))
            assert user == confs["resp"].replace(psk, '"ikedlab-redacted-psk-1"').encode()

            kept = make_bundle(lab, tmp_path / "secret.tar.gz", show_secrets=True)
            replay = open_bundle(kept, tmp_path / "replay")
            for name, path in replay.ike_conf_files.items():
                assert path.read_bytes() == confs[name].encode(), f"{name}'s file is not replayed as given"
        finally:
            shutil.rmtree(tmp_path, ignore_errors=True)  # the bundle with the secrets in it
