"""iked.conf rendered for the guide's topology is the guide's file, for init and mirrored for resp."""

import textwrap

from lab import render, topology

GUIDE_INIT = textwrap.dedent("""\
    init="192.0.2.1"
    resp="198.51.100.1"
    initlan="10.0.1.0/24"
    resplan="10.0.2.0/24"

    ikev2 'init' active esp \\
    \tfrom $initlan to $resplan \\
    \tfrom $initlan to $resp \\
    \tlocal $init peer $resp \\
    \tsrcid init.example.com
""")

GUIDE_RESP = textwrap.dedent("""\
    resp="198.51.100.1"
    init="192.0.2.1"
    resplan="10.0.2.0/24"
    initlan="10.0.1.0/24"

    ikev2 'resp' passive esp \\
    \tfrom $resplan to $initlan \\
    \tfrom $resplan to $init \\
    \tlocal $resp peer $init \\
    \tsrcid resp.example.com
""")


def body(conf: str) -> str:
    """The file without its leading comment lines."""
    return "".join(line for line in conf.splitlines(keepends=True) if not line.startswith("#"))


def guide() -> topology.Topology:
    return topology.load(None, ("linux", "openbsd"))


def test_init_iked_conf_is_the_guides():
    t = guide()
    assert body(render.iked_conf(t, t.host("init"))) == GUIDE_INIT


def test_resp_iked_conf_mirrors_init():
    t = guide()
    assert body(render.iked_conf(t, t.host("resp"))) == GUIDE_RESP


def test_peer_any_for_nat_traversal():
    t = guide()
    conf = render.iked_conf(t, t.host("resp"), peer_any=True)
    assert "\tlocal $resp peer any \\\n" in conf


def test_explicit_proposals_are_written_before_srcid():
    t = guide()
    conf = render.iked_conf(t, t.host("init"), proposals=render.Proposals())
    lines = conf.splitlines()
    ike = next(i for i, line in enumerate(lines) if "ikesa enc" in line)
    assert "childsa enc aes-256 auth hmac-sha2-512" in lines[ike + 1]
    assert lines[ike + 2].strip() == "srcid init.example.com"
