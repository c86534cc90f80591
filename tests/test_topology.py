"""The guide's topology loads as the guide draws it; each kind of bad input gets one clear, named error."""

import ipaddress
import re
from pathlib import Path

import pytest

from lab import topology
from lab.errors import TopologyError
from lab.placement import load_topology

PLATFORMS = ("linux", "openbsd")
GUIDE = topology.guide_path().read_text()


def load_text(tmp_path: Path, text: str, name: str = "site.yaml") -> topology.Topology:
    path = tmp_path / name
    path.write_text(text)
    return topology.load(path, PLATFORMS)


def test_guide_topology_is_the_guides_lab():
    t = topology.load(None, PLATFORMS)
    assert list(t.hosts) == ["initlan", "init", "inet", "resp", "resplan"]
    init, resp = t.host("init"), t.host("resp")
    assert [str(i.address) for i in init.interfaces] == ["192.0.2.1/24", "10.0.1.1/24"]
    assert [str(i.address) for i in resp.interfaces] == ["198.51.100.1/24", "10.0.2.1/24"]
    assert str(t.host("initlan").interfaces[0].address) == "10.0.1.2/24"
    assert str(t.host("resplan").interfaces[0].address) == "10.0.2.2/24"
    assert [str(i.address) for i in t.host("inet").interfaces] == ["192.0.2.254/24", "198.51.100.254/24"]
    assert init.ipsec and init.ipsec.mode == "active" and init.ipsec.srcid == "init.example.com"
    assert resp.ipsec and resp.ipsec.mode == "passive" and resp.ipsec.srcid == "resp.example.com"
    assert t.peer_of(init) is resp and t.peer_of(resp) is init
    assert t.protected_subnet(init) == ipaddress.IPv4Network("10.0.1.0/24")
    assert init.uplink.link == "wan1" and resp.uplink.link == "wan2"
    assert [h.name for h in t.hosts.values() if h.forwarding] == ["init", "inet", "resp"]
    assert t.host("initlan").gateway == ipaddress.IPv4Address("10.0.1.1")


# Each bad input (a one-line change to the guide) and the message it must give: the wording is a contract.
CASES = {
    "unknown host in a link": (
        ("{initlan: 10.0.1.2, init: 10.0.1.1}", "{initlan: 10.0.1.2, gw: 10.0.1.1}"),
        "site.yaml: links.lan1.ends.gw: unknown host 'gw' (hosts are: initlan, init, inet, resp, resplan)",
    ),
    "address outside its subnet": (
        ("resp: 10.0.2.1, resplan: 10.0.2.2", "resp: 10.0.2.1, resplan: 10.0.3.2"),
        "site.yaml: links.lan2.ends.resplan: 10.0.3.2 is outside the link's subnet 10.0.2.0/24",
    ),
    "duplicate address": (
        ("resp: 10.0.2.1, resplan: 10.0.2.2", "resp: 10.0.2.1, resplan: 10.0.2.1"),
        "site.yaml: links.lan2.ends.resplan: address 10.0.2.1 is already used at links.lan2.ends.resp",
    ),
    "duplicate host name": (
        ("  resplan:\n    interfaces: [lan2]", "  resp:\n    interfaces: [lan2]"),
        "site.yaml: line 38: 'resp' is defined twice (first on line 29)",
    ),
    "gateway without a peer": (
        ("      peer: resp\n", ""),
        "site.yaml: hosts.init.ipsec.peer: missing: an IPsec gateway needs a peer",
    ),
    "unknown platform": (
        ("  inet:\n", "  inet:\n    platform: obsd\n"),
        "site.yaml: hosts.inet.platform: 'obsd' is not one of linux, openbsd",
    ),
    "peer that does not answer back": (
        ("      peer: init\n", "      peer: inet\n"),
        "site.yaml: hosts.init.ipsec.peer: 'resp' names 'inet' as its peer, not 'init'",
    ),
    "gateway route off-link": (
        ("gateway: 10.0.1.1", "gateway: 10.9.9.9"),
        "site.yaml: hosts.initlan.gateway: 10.9.9.9 is on none of this host's links",
    ),
    "a link listed twice": (
        ("interfaces: [wan1, lan1]", "interfaces: [wan1, lan1, lan1]"),
        "site.yaml: hosts.init.interfaces: link 'lan1' is listed 2 times",
    ),
    "srcid with a space": (
        ("srcid: init.example.com", "srcid: init example.com"),
        "site.yaml: hosts.init.ipsec.srcid: 'init example.com' is not an FQDN identity: lower-case letters,"
        " digits, '-' and '.' (such as init.example.com)",
    ),
    "srcid with shell metacharacters": (
        ("srcid: init.example.com", "srcid: 'init;reboot'"),
        "site.yaml: hosts.init.ipsec.srcid: 'init;reboot' is not an FQDN identity: lower-case letters,"
        " digits, '-' and '.' (such as init.example.com)",
    ),
    "srcid in capitals (iked looks keys up lower-cased)": (
        ("srcid: init.example.com", "srcid: Init.Example.com"),
        "site.yaml: hosts.init.ipsec.srcid: 'Init.Example.com' is not an FQDN identity: lower-case letters,"
        " digits, '-' and '.' (such as init.example.com)",
    ),
    "srcid that is an address": (
        ("srcid: init.example.com", "srcid: 192.0.2.1"),
        "site.yaml: hosts.init.ipsec.srcid: '192.0.2.1' is an IP address: iked would make it an IP identity,"
        " and ikedlab installs keys for FQDN identities (such as init.example.com)",
    ),
    "one srcid for both gateways": (
        ("srcid: resp.example.com", "srcid: init.example.com"),
        "site.yaml: hosts.resp.ipsec.srcid: 'init.example.com' is also init's srcid:"
        " each gateway needs its own",
    ),
    "three ends on a link": (
        ("{initlan: 10.0.1.2, init: 10.0.1.1}", "{initlan: 10.0.1.2, init: 10.0.1.1, inet: 10.0.1.3}"),
        "site.yaml: links.lan1.ends: a link joins exactly two hosts, not 3",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_topology_gives_one_clear_line(tmp_path, case):
    (old, new), expected = CASES[case]
    assert old in GUIDE, f"the test's anchor is gone from guide.yaml: {old!r}"
    with pytest.raises(TopologyError) as err:
        load_text(tmp_path, GUIDE.replace(old, new, 1))
    assert str(err.value).split(" (and ")[0] == expected
    assert "\n" not in str(err.value)


def test_a_gateway_named_like_an_iked_keyword(tmp_path):
    with pytest.raises(TopologyError) as err:
        load_text(tmp_path, re.sub(r"\bresp\b", "peer", GUIDE))
    assert str(err.value) == (
        "site.yaml: hosts.peer: 'peer' is an iked.conf keyword: a gateway's name is the macro of its address"
    )


def test_gateway_names_that_clash_as_iked_macros(tmp_path):
    with pytest.raises(TopologyError) as err:
        load_text(tmp_path, re.sub(r"\bresp\b", "initlan", GUIDE.replace("initlan", "host1")))
    assert str(err.value).startswith(
        "site.yaml: hosts.init: 'init' and its peer 'initlan' clash in iked.conf: macro 'initlan' would be"
        " both init's subnet and initlan's address"
    )


def test_every_problem_is_collected_before_failing(tmp_path):
    text = GUIDE.replace("resplan: 10.0.2.2", "resplan: 10.0.3.2").replace(
        "  inet:\n", "  inet:\n    platform: x\n"
    )
    with pytest.raises(TopologyError) as err:
        load_text(tmp_path, text)
    assert len(err.value.problems) == 2
    assert "(and 1 more problem)" in str(err.value)
    assert len(err.value.details) == 1 and "site.yaml: hosts.inet.platform" in err.value.details[0]
    assert err.value.hint is None


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(TopologyError, match=r"^nope.yaml: cannot read the file"):
        topology.load(tmp_path / "nope.yaml", PLATFORMS)


def test_not_yaml_names_the_line(tmp_path):
    with pytest.raises(TopologyError, match=r"^site.yaml: line \d+: not valid YAML"):
        load_text(tmp_path, "links: [\n")


def test_shipped_topology_validates_with_the_real_platform_registry():
    t = load_topology()
    assert len(t.gateways) == 2
