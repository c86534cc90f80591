"""Input from other people, at its worst: topologies, bundles, files and names made to break ikedlab.

Each case goes in where a stranger's input comes in (a topology file, a bundle, a user's iked.conf, the
command line) and must come out refused in one line, write nothing outside the lab's folder, put no script
in a picture or report, and reach a guest byte for byte when it is a file iked accepts.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_cli import ikedlab, one_line

from lab import topology
from lab.errors import TopologyError

PLATFORMS = ("linux", "openbsd")
GUIDE = topology.guide_path().read_text()
#: The issue's link name: it booted a lab, and `graph -o` drew an SVG whose link ran javascript.
SCRIPT_LINK = 'x>, URL="javascript:alert(1)", label=<lan1'


def load_text(tmp_path: Path, text: str | bytes) -> topology.Topology:
    path = tmp_path / "site.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return topology.load(path, PLATFORMS)


def refused(tmp_path: Path, text: str | bytes) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        load_text(tmp_path, text)
    assert all("\n" not in line for line in caught.value.lines()), caught.value.lines()
    return caught.value


# --- topologies ---------------------------------------------------------------------------------------------


def test_a_trailing_newline_in_a_host_name_is_refused(tmp_path):
    # re.match with `$` accepted "resplan\n": the newline would reach libvirt names and key files.
    text = GUIDE.replace("resplan: 10.0.2.2", '"resplan\\n": 10.0.2.2').replace(
        "  resplan:\n", '  "resplan\\n":\n'
    )
    error = refused(tmp_path, text)
    assert error.message.startswith("site.yaml: hosts: 'resplan\\n' is not a host name")


def test_a_trailing_newline_in_a_srcid_is_refused(tmp_path):
    # The srcid names the peer's key file and is written into iked.conf.
    error = refused(tmp_path, GUIDE.replace("srcid: resp.example.com", 'srcid: "resp.example.com\\n"'))
    assert error.message == (
        "site.yaml: hosts.resp.ipsec.srcid: 'resp.example.com\\n' is not an FQDN identity: lower-case "
        "letters, digits, '-' and '.' (such as init.example.com)"
    )


def test_a_link_named_to_inject_a_url_into_the_picture_is_refused(tmp_path):
    text = GUIDE.replace("  lan1: {", f"  '{SCRIPT_LINK}': {{").replace("[lan1]", f"['{SCRIPT_LINK}']")
    text = text.replace("[wan1, lan1]", f"[wan1, '{SCRIPT_LINK}']").replace("protect: lan1", "protect: wan1")
    error = refused(tmp_path, text)
    assert "links: 'x>, URL=\"javascript:alert(1)\", label=<lan1' is not a link name" in error.message


#: Nested aliases (a "billion laughs"): each level lists the one before nine times.
def _laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels + 1):
        lines.append(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nlinks: {{lan1: {{subnet: *a{levels}, ends: {{}}}}}}\nhosts: {{}}\n"


def test_aliases_are_refused_before_any_value_is_expanded(tmp_path):
    # Five levels: today's message quotes the expanded subnet (9^5 items, ~0.4 MB); nine would need ~14 GB.
    started = time.monotonic()
    error = refused(tmp_path, _laughs(5))
    assert time.monotonic() - started < 1
    assert len(error.message) < 300
    assert error.message == (
        "site.yaml: line 1: a value anchored here (&) is used again by an alias (*): "
        "topologies take no aliases"
    )


def test_a_huge_value_is_quoted_by_its_kind_not_written_out(tmp_path):
    big = "[" + ", ".join(["10.0.0.1"] * 20000) + "]"
    error = refused(tmp_path, GUIDE.replace("subnet: 10.0.1.0/24", f"subnet: {big}"))
    assert error.message.startswith("site.yaml: links.lan1.subnet: a list is not an IPv4 subnet")
    assert len(" ".join(error.lines())) < 2000


def test_a_binary_topology_is_one_line(tmp_path):
    error = refused(tmp_path, b"\x7fELF\x02\x01\x01\x00\xff\xfe" + bytes(range(256)))
    assert error.message == "site.yaml: not UTF-8 text (byte 0xff at offset 8)"


def test_control_characters_in_a_topology_are_one_line(tmp_path):
    error = refused(tmp_path, GUIDE.replace("# Each link", "# \x1b[2J\x07 Each link"))
    assert error.message.startswith("site.yaml: not valid YAML")


def test_a_topology_too_big_to_be_one_is_refused_unread(tmp_path):
    error = refused(tmp_path, GUIDE + "#" * (300 * 1024) + "\n")
    assert error.message == "site.yaml: larger than 256 KiB, more than ikedlab reads"


def test_a_binary_topology_on_the_command_line_is_one_line(tmp_path):
    binary = tmp_path / "site.yaml"
    binary.write_bytes(b"\x00\x01\xff\xfe" * 64)
    line = one_line(ikedlab("graph", "--topology", str(binary), tmp_path=tmp_path))
    assert line == "ikedlab: site.yaml: not UTF-8 text (byte 0xff at offset 2)"
