"""The libreswan dialect without a VM: its ipsec.conf, its key handling, and its SA parser on output
recorded from a live lab (tests/data/libreswan/)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from lab import render
from lab.images.recipe import RECIPE_DIR, Recipe, with_variant
from lab.placement import load_topology
from lab.platforms import get_platform
from lab.platforms.libreswan import parse_libreswan_sas
from lab.readings import SaState

GUIDE = load_topology(None)


def test_ipsec_conf_names_the_guides_ids_flows_and_pinned_proposals() -> None:
    text = render.libreswan_conf(GUIDE, GUIDE.host("init"))
    for line in (
        "left=192.0.2.1",
        "right=198.51.100.1",
        "leftid=@init.example.com",
        "rightid=@resp.example.com",
        "leftsubnet=10.0.1.0/24,192.0.2.1/32",
        "rightsubnet=10.0.2.0/24,198.51.100.1/32",
        "leftauth=ecdsa",
        "ike=aes256-sha2_256;dh19",  # the group pinned: one KE payload iked accepts
        "esp=aes256-sha2_512",  # no AES-GCM, no hmac-sha2-256: what iked on Linux can do
        "pfs=no",
        "leftupdown=%disabled",
        "also=ikedlab-keys",
        f"include {render.LIBRESWAN_KEYS_CONF}",
    ):
        assert re.search(rf"^\s*{re.escape(line)}$", text, re.M), line
    assert "# ikedlab: active" in text
    resp = render.libreswan_conf(GUIDE, GUIDE.host("resp"), peer_any=True)
    assert "# ikedlab: passive" in resp and re.search(r"^\s*right=%any$", resp, re.M)
    with pytest.raises(ValueError, match="must be the same"):
        render.libreswan_conf(GUIDE, GUIDE.host("init"), proposals=render.Proposals(ike_prf="hmac-sha2-384"))


def test_the_key_stays_in_nss_and_only_pem_public_halves_cross() -> None:
    swan = get_platform("libreswan")
    keygen = swan.keygen_command()
    assert "newhostkey" in keygen and "--keytype ecdsa" in keygen and "showhostkey" in keygen
    assert f'--pem --ckaid "$ck" > {swan.public_key}' in keygen
    assert swan.peer_pubkey_path("init.example.com") == "/etc/ipsec.d/pubkeys/init.example.com"
    # the peer's PEM becomes rightpubkey= (its base64 body on one line) as pluto starts, and is checked
    for command in (swan.ike_start_command(), swan.ike_check_command()):
        assert "rightpubkey=" in command and render.LIBRESWAN_KEYS_CONF in command
    assert "--initiate" in swan.ike_start_command() and "--nofork" in swan.ike_start_command()


def test_the_libreswan_variant_takes_what_the_recipe_leaves_out() -> None:
    recipe = with_variant(Recipe.load(RECIPE_DIR), "trixie-libreswan")
    assert recipe.suite == "trixie" and "libreswan" in recipe.packages
    assert "libaudit1" in recipe.packages and "libaudit1" not in recipe.exclude  # pluto links against it
    assert "libsoftokn3.so" in recipe.keep  # NSS's token, loaded with dlopen
    assert get_platform("libreswan").facts.image_variant == "trixie-libreswan"


# --- readings, on output recorded from a libreswan <-> libreswan lab (sa_command's three sections) --------
DATA = Path(__file__).parent / "data" / "libreswan"


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def test_sas_of_an_established_initiator() -> None:
    state = parse_libreswan_sas((DATA / "sa-established-init.txt").read_text())
    assert state.established
    (ike,) = state.ike_sas
    assert (ike.local, ike.peer, ike.state) == ("192.0.2.1:500", "198.51.100.1:500", "ESTABLISHED")
    assert ike.peer_id == "FQDN/resp.example.com" and not ike.natt
    # `esp.d2841ca@198.51.100.1 esp.474452cd@192.0.2.1`: out to the peer, in at us (pluto drops leading zeros)
    assert {(c.direction, c.spi, c.src, c.dst) for c in state.child_sas} == {
        ("out", 0x0D2841CA, "192.0.2.1", "198.51.100.1"),
        ("in", 0x474452CD, "198.51.100.1", "192.0.2.1"),
    }
    flows = {(f.direction, f.src, f.dst, f.peer) for f in state.flows}
    for mine in ("10.0.1.0/24", "192.0.2.1/32"):
        for theirs in ("10.0.2.0/24", "198.51.100.1/32"):
            assert ("out", net(mine), net(theirs), "198.51.100.1") in flows
            assert ("in", net(theirs), net(mine), "198.51.100.1") in flows
    assert len(flows) == 8  # the socket bypasses and IPv6 neighbour discovery policies are not flows


def test_sas_of_the_responder_mirror_the_initiators() -> None:
    init = parse_libreswan_sas((DATA / "sa-established-init.txt").read_text())
    resp = parse_libreswan_sas((DATA / "sa-established-resp.txt").read_text())
    assert resp.established and resp.ike_sas[0].peer_id == "FQDN/init.example.com"
    assert {(c.direction, c.spi) for c in resp.child_sas} == {
        ("in" if c.direction == "out" else "out", c.spi) for c in init.child_sas
    }


def test_no_sas_before_the_peer_came() -> None:
    state = parse_libreswan_sas((DATA / "sa-none-resp.txt").read_text())
    assert state == SaState() and not state.established
    assert parse_libreswan_sas("") == SaState()


def test_older_pluto_spellings_and_a_half_open_sa() -> None:
    text = (
        "# ikedlab: showstates\n"
        '000 #1: "init":4500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 27456s; idle;\n'
        '000 #2: "init":4500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); IKE SA #1; idle;\n'
        '000 #2: "init" esp.248d1071@198.51.100.1 esp.4e68b7a9@192.0.2.1 Traffic: ESPin=0B ESPout=0B\n'
        '#3: "init":500 IKE_SA_INIT_I (sent IKE_SA_INIT request); RETRANSMIT in 1s; idle;\n'
    )
    state = parse_libreswan_sas(text)
    assert [s.state for s in state.ike_sas] == ["ESTABLISHED", "IKE_SA_INIT_I"]
    assert state.ike_sas[0].natt and state.established


def test_pluto_saying_it_cannot_parse_the_peer_stops_the_wait_at_once() -> None:
    from lab.platforms.parsers import iked_fatal_line

    line = (
        'Nov 28 07:09:02.143912: "init" #2: malformed payload in packet: ikev2 cert encoding of IKEv2 '
        "Certificate Request Payload has an unknown value: 201 (0xc9)"
    )
    pattern = get_platform("libreswan").fatal_log_pattern()
    assert iked_fatal_line(f"retransmission\n{line}\n", pattern) == line
    assert iked_fatal_line("ikev2_send_auth_failed: authentication failed for ", pattern)  # iked's too
    assert not iked_fatal_line(line, get_platform("linux").fatal_log_pattern())
