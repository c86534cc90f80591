"""docs/walkthrough.md parses into steps, and what it promises agrees with the files ikedlab writes."""

import pytest

from lab import walkthrough
from lab.errors import ParseError
from lab.placement import load_topology
from lab.plan import Options, rendered_ike_conf
from lab.platforms import get_platform


def test_every_section_has_steps_on_hosts_of_the_guide():
    steps = walkthrough.load()
    hosts = set(load_topology(None).hosts)
    assert len(steps) >= 10 and {s.host for s in steps} <= hosts
    assert all(s.expected for s in steps), "every command says what it shows"


def test_its_iked_conf_is_the_one_provisioning_writes():
    t = load_topology(None)
    (step,) = [s for s in walkthrough.load() if s.command == "cat /etc/iked.conf"]
    conf = rendered_ike_conf(t, {h: get_platform("linux") for h in t.hosts}, step.host, Options())
    assert walkthrough.missing(step, conf) == []


def test_ellipsis_matches_anything_and_a_missing_line_is_named():
    (step,) = walkthrough.parse("# s\n```lab\n$ ikedlab exec init -- x\n\t… input ESP packets\nnope\n```\n")
    assert walkthrough.missing(step, "esp:\n\t12 input ESP packets\n") == ["nope"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("```lab\n$ ikedlab status\n```\n", r"x:2: a lab block runs `\$ ikedlab exec HOST -- COMMAND`"),
        ("```lab\noutput\n```\n", "x:2: output before any"),
        ("```lab\n$ ikedlab exec init -- true\n", "not closed"),
    ],
)
def test_malformed_blocks_name_the_line(text, message):
    with pytest.raises(ParseError, match=message):
        walkthrough.parse(text, "x")


def test_its_banner_is_the_one_provisioning_writes():
    from lab.banner import motd
    from lab.platforms import get_platform

    t = load_topology(None)
    (step,) = [s for s in walkthrough.load() if s.command == "cat /etc/motd"]
    assert walkthrough.missing(step, motd(t, t.host(step.host), get_platform("linux"))) == []
