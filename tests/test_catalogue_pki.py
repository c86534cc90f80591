"""The regress's certificates, made on this host as openiked's regress/live makes them (lab.catalogue.pki):
chains that verify, the names and alternative names its targets use as ids, and CA keys that do not outlive
the Pki object."""

import shutil
import subprocess

import pytest

from lab.catalogue.pki import INTERMEDIATE, Pki, cas_for, certificates_for

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed on this host")


def openssl(*args: str, stdin: str = "") -> str:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    keys = tmp_path_factory.mktemp("gateways")
    public = {}
    for side in ("left", "right"):  # in the lab: made in each gateway, only the public half read
        openssl("genrsa", "-out", str(keys / f"{side}.key"), "2048")
        public[side] = openssl("rsa", "-in", str(keys / f"{side}.key"), "-pubout")
    pki = Pki()
    files = pki.files(public)
    yield pki, files, public
    pki.close()


def test_each_side_gets_what_the_regress_puts_on_it(issued):
    _, files, _ = issued
    assert sorted(files["left"].certs) == sorted(f"{n}.crt" for n in certificates_for("left", "right"))
    assert "right-from-ca-none.crt" in files["left"].certs  # cert-no-ca: the peer's certificate, known by id
    assert sorted(files["right"].cas) == sorted(f"{n}.crt" for n in cas_for("right"))
    assert "ca-left.crt" not in files["right"].cas and "ca-none.crt" not in files["right"].cas


def test_certificates_carry_the_ids_the_targets_use(issued):
    _, files, public = issued
    text = openssl(
        "x509",
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
        stdin=files["left"].certs["left-from-ca-both.crt"],
    )
    assert "CN = left-from-ca-both" in text and "O = iked" in text and "L = Munich" in text
    assert (
        "DNS:left-from-ca-both, DNS:left-from-ca-both-alternative, email:left-from-ca-both@openbsd.org"
        in text
    )
    key = openssl("x509", "-noout", "-pubkey", stdin=files["left"].certs["left-from-ca-both.crt"])
    assert key.strip() == public["left"].strip()  # the gateway's own key, certified


def test_chains_verify_and_the_intermediate_needs_its_root(issued, tmp_path):
    pki, files, _ = issued
    for name, text in {
        **files["left"].certs,
        **files["left"].cas,
        "ca-none.crt": pki.ca_certificate("ca-none"),
    }.items():
        (tmp_path / name).write_text(text)
    verify = ["openssl", "verify", "-CAfile"]
    ok = subprocess.run(
        [*verify, str(tmp_path / "ca-both.crt"), str(tmp_path / "left-from-ca-both.crt")], capture_output=True
    )
    assert ok.returncode == 0
    leaf = str(tmp_path / f"left-from-{INTERMEDIATE}.crt")
    partial = subprocess.run([*verify, str(tmp_path / f"{INTERMEDIATE}.crt"), leaf], capture_output=True)
    assert partial.returncode != 0  # intermediate-fail: without cert_partial_chain the chain is incomplete
    full = subprocess.run(
        [*verify, str(tmp_path / "ca-none.crt"), "-untrusted", str(tmp_path / f"{INTERMEDIATE}.crt"), leaf],
        capture_output=True,
    )
    assert full.returncode == 0
    bc = openssl("x509", "-noout", "-ext", "basicConstraints", stdin=files["left"].cas[f"{INTERMEDIATE}.crt"])
    assert "CA:TRUE, pathlen:0" in bc


def test_the_ca_keys_live_only_as_long_as_the_pki(issued):
    # Last in this module: it closes the module's Pki (making another would cost five RSA keys).
    pki = issued[0]
    folder = pki.directory
    assert (folder / "ca-both.key").is_file() and oct(folder.stat().st_mode & 0o777) == "0o700"
    pki.close()
    assert not folder.exists()
