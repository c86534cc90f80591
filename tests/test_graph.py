"""`ikedlab graph`: the lab as DOT for graphviz and as text, with addresses and the tunnel's state."""

import base64
import shutil

import pytest

from lab import graph
from lab.placement import load_topology
from lab.report import picture

UP = {"init": "ESTABLISHED", "resp": "ESTABLISHED"}


def guide():
    return load_topology(None)


def test_dot_has_every_host_link_address_and_the_tunnel():
    t = guide()
    dot = graph.dot_source(
        graph.LabView(t, "demo", {h: "linux" for h in t.hosts}, {h: "eth" for h in t.hosts}, UP)
    )
    for host in t.hosts.values():
        assert f'"{host.name}" [' in dot
        for iface in host.interfaces:
            assert f"eth{iface.index} {iface.address}" in dot
    for link in t.links.values():
        assert f"{link.name}<br/>" in dot and str(link.subnet) in dot
    assert "IPsec tunnel 10.0.1.0/24 ⇄ 10.0.2.0/24<br/><b>ESTABLISHED</b>" in dot


@pytest.mark.parametrize(
    "states, shown",
    [(UP, "ESTABLISHED"), ({"init": "ESTABLISHED", "resp": "down"}, "down"), (None, graph.NOT_RUNNING)],
)
def test_tunnel_state_is_both_gateways_reading(states, shown):
    assert [t.state for t in graph.tunnels(guide(), states)] == [shown]
    assert f"10.0.1.0/24 <=> 10.0.2.0/24, {shown}" in graph.text(graph.LabView(guide(), states=states))


def test_text_walks_the_chain_with_both_ends_of_each_link():
    text = graph.text(
        graph.LabView(guide(), "demo", interface_prefixes={"init": "vio", "inet": "vio"}, states=UP)
    )
    lines = text.splitlines()
    assert [line.split()[0].rstrip(":") for line in lines if not line.startswith((" ", "lab", "tunnel"))] == [
        "initlan",
        "init",
        "inet",
        "resp",
        "resplan",
    ]
    assert "vio0 192.0.2.1" in text and "vio0 192.0.2.254" in text and "│ wan1 192.0.2.0/24" in text
    assert "init: IPsec gateway, active   <== IPsec tunnel to resp: ESTABLISHED" in text


@pytest.mark.skipif(not shutil.which("dot"), reason="graphviz is not installed (apt-get install graphviz)")
def test_svg_and_png_are_drawn(tmp_path):
    dot = graph.dot_source(graph.LabView(guide(), states=UP))
    assert graph.write(dot, tmp_path / "lab.svg").read_text().lstrip().startswith("<?xml")
    assert graph.write(dot, tmp_path / "lab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in base64.b64decode(picture(guide()).svg_base64).decode()  # the HTML report draws it


def test_unknown_format_is_one_clear_line(tmp_path):
    with pytest.raises(Exception, match=r"cannot draw \.gif"):
        graph.write("graph {}", tmp_path / "lab.gif")
