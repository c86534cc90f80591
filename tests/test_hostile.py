"""Input from other people, at its worst: topologies, bundles, files and names made to break ikedlab.

Each case goes in where a stranger's input comes in (a topology file, a bundle, a user's iked.conf, the
command line) and must come out refused in one line, write nothing outside the lab's folder, put no script
in a picture or report, and reach a guest byte for byte when it is a file iked accepts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from test_cli import ikedlab, one_line

from lab import cli_repro, gate, graph, replay, report, topology, traffic
from lab.cli import build_parser
from lab.errors import LabError, TopologyError
from lab.host import Host
from lab.platforms import get_platform
from lab.replay import open_bundle

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
    # Measured on the old code: five levels (373 bytes) gave a 7.7 MB message, six (427 bytes) 69 MB in 5.8 s.
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


# --- bundles ------------------------------------------------------------------------------------------------

CONF = b"ikev2 'resp' passive esp\n"


def _manifest(**changes: object) -> dict:
    manifest = {
        "format": 1,
        "topology": "topology.yaml",
        "topology_name": "site.yaml",
        "platforms": {
            "initlan": "linux",
            "init": "linux",
            "inet": "linux",
            "resp": "linux",
            "resplan": "linux",
        },
        "iked_conf": {"resp": "user/resp.iked.conf"},
        "expect_failure": None,
    }
    manifest.update(changes)
    return manifest


def _bundle(tmp_path: Path, manifest: object, members: dict[str, bytes] | None = None) -> Path:
    """A tar.gz laid out as `ikedlab bundle` lays one out: everything under one top folder."""
    files = {"topology.yaml": GUIDE.encode(), "user/resp.iked.conf": CONF, **(members or {})}
    manifest_bytes = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    files["manifest.json"] = manifest_bytes
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name if name.startswith("/") else f"ikedlab-x/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _replay(tmp_path: Path, archive: Path) -> LabError:
    """Open the bundle into a lab folder; return the one-line refusal, after checking that nothing was
    written outside that folder."""
    lab_dir = tmp_path / "state" / "labs" / "x"
    lab_dir.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(LabError) as caught:
        open_bundle(archive, lab_dir / "replay")
    after = {p for p in tmp_path.rglob("*")}
    assert {p for p in after - before if lab_dir not in p.parents} == set()
    assert all("\n" not in line for line in caught.value.lines()), caught.value.lines()
    return caught.value


def test_a_topology_name_that_climbs_out_of_the_lab_folder_is_refused(tmp_path):
    archive = _bundle(tmp_path, _manifest(topology_name="../../../../escaped.yaml"))
    error = _replay(tmp_path, archive)
    assert "topology_name: '../../../../escaped.yaml' is not a file name" in error.message
    assert not list(tmp_path.rglob("escaped.yaml"))


def test_a_host_name_that_climbs_out_of_the_lab_folder_is_refused(tmp_path):
    archive = _bundle(tmp_path, _manifest(iked_conf={"../../../../escaped": "user/resp.iked.conf"}))
    error = _replay(tmp_path, archive)
    assert "iked_conf: '../../../../escaped' is not a host name" in error.message
    assert not list(tmp_path.rglob("escaped.iked.conf"))


@pytest.mark.parametrize(
    "manifest, says",
    [
        (b"\x1f\x8b not json", "manifest.json: not UTF-8 text"),
        (b"[1, 2]", "manifest.json: expected a JSON object, found a list"),
        (b"[" * 100_000, "manifest.json: not JSON"),
        ({"format": 1}, "manifest.json: topology: None is not a topology file of the bundle"),
        (_manifest(platforms=["linux"]), "manifest.json: platforms: expected a mapping, found a list"),
        (_manifest(iked_conf={"resp": 7}), "manifest.json: iked_conf.resp: 7 is not a user file"),
        (_manifest(images={"linux": "x"}), "manifest.json: images.linux: expected a mapping"),
        (_manifest(expect_failure="a\nb"), "manifest.json: expect_failure: 'a\\nb' is not a line"),
        (_manifest(topology="../topology.yaml"), "manifest.json: topology: '../topology.yaml' is not"),
    ],
)
def test_a_malformed_manifest_is_one_line(tmp_path, manifest, says):
    error = _replay(tmp_path, _bundle(tmp_path, manifest))
    assert error.message.startswith(f"{tmp_path / 'evil.tar.gz'}: {says}"), error.message


def test_a_gzip_bomb_in_a_member_the_replay_reads_is_refused_by_its_size(tmp_path):
    bomb = b"\0" * (64 << 20)  # 64 MiB of zeros: 64 KiB of gzip
    error = _replay(tmp_path, _bundle(tmp_path, _manifest(), {"topology.yaml": bomb}))
    assert error.message.endswith(
        "'topology.yaml' is 67108864 bytes, more than the 256 KiB ikedlab reads of it"
    )


def test_a_gzip_bomb_anywhere_stops_at_the_cap_on_all_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "BUNDLE_BYTES", 8 << 20)  # the real cap is 1 GiB: the same path, faster
    archive = _bundle(tmp_path, _manifest(), {"pcaps/wan1.pcap": b"\0" * (32 << 20)})
    error = _replay(tmp_path, archive)
    assert error.message.endswith("once uncompressed: not a bundle ikedlab reads")


def test_archive_members_named_to_climb_out_are_never_written(tmp_path):
    archive = _bundle(tmp_path, _manifest(), {"/etc/evil": b"x", "../../evil": b"x", "user/../../e": b"x"})
    into = tmp_path / "labs" / "x" / "replay"
    replayed = open_bundle(archive, into)
    assert sorted(p.name for p in into.iterdir()) == ["resp.iked.conf", "site.yaml"]
    assert replayed.ike_conf_files["resp"].read_bytes() == CONF
    assert {p.name for p in tmp_path.rglob("*")} == {
        "evil.tar.gz",
        "labs",
        "x",
        "replay",
        "site.yaml",
        "resp.iked.conf",
    }


def test_a_bundles_expected_failure_is_matched_as_plain_text(tmp_path, monkeypatch):
    # The bundle's author chose this regex: over "aaaa…!" it backtracks for ever (2^n steps).
    evil = "(a+)+$"
    archive = _bundle(tmp_path, _manifest(expect_failure=evil))
    monkeypatch.setattr("lab.platforms.get_platform", lambda name: SimpleNamespace(boot_media=lambda r: None))
    monkeypatch.setattr("lab.replay.media_digests", lambda media: {})
    lab = SimpleNamespace(name="x", run_dir=tmp_path / "labs" / "x")
    args = build_parser().parse_args(["up", "--from", str(archive)])
    request = cli_repro.up_request(lab, args, {}, {})  # type: ignore[arg-type]
    assert request.expect_failure == re.escape(evil)
    started = time.monotonic()
    assert not re.search(request.expect_failure, "a" * 64 + "!")
    assert re.search(request.expect_failure, f"iked: {evil} said iked")
    assert time.monotonic() - started < 0.1


# --- pictures and reports -----------------------------------------------------------------------------------


def _past_the_gate(tmp_path: Path, monkeypatch) -> topology.Topology:
    """A topology whose names got past the gate (as if its rules had a hole): the picture and the report
    must still carry them as text only."""
    anything = gate.Name("a name", r"(?s).+", "anything")
    monkeypatch.setattr(gate, "HOST", anything)
    monkeypatch.setattr(gate, "LINK", anything)
    text = GUIDE.replace("  lan1: {", f"  '{SCRIPT_LINK}': {{").replace("[lan1]", f"['{SCRIPT_LINK}']")
    text = text.replace("[wan1, lan1]", f"[wan1, '{SCRIPT_LINK}']").replace("protect: lan1", "protect: wan1")
    evil_host = 'a\\" URL="javascript:alert(2)" <script>alert(3)</script>'
    return load_text(tmp_path, text.replace("initlan", json.dumps(evil_host)))


@pytest.mark.skipif(not shutil.which("dot"), reason="graphviz is not installed (apt-get install graphviz)")
def test_no_name_adds_a_link_or_a_script_to_the_picture(tmp_path, monkeypatch):
    svg = graph.draw(graph.dot_source(graph.LabView(_past_the_gate(tmp_path, monkeypatch))), "svg").decode()
    assert "href" not in svg and "<script" not in svg and "javascript:alert" in svg  # there, as text
    assert "<a " not in svg


def test_the_report_shows_the_picture_as_an_image_never_as_markup(tmp_path, monkeypatch):
    shown = report.picture(_past_the_gate(tmp_path, monkeypatch))
    page = (
        jinja2.Environment(
            loader=jinja2.PackageLoader("lab", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
        )
        .get_template("report.html.j2")
        .render(
            verdict="passed",
            totals={"passed": 0, "failed": 0, "skipped": 0, "seconds": 0},
            suites=[],
            picture=shown,
            versions=[],
            generated="now",
        )
    )
    assert "<script" not in page and "javascript:" not in page and "<svg" not in page


# --- files and values sent to guests ------------------------------------------------------------------------

#: An iked.conf iked accepts: control bytes in a comment (Ctrl-C, Ctrl-D, Ctrl-Z, Ctrl-\, a carriage return,
#: NUL, ESC, DEL); typed into a tty they interrupt, end input, suspend, quit or turn into newlines.
CONTROL_CONF = (
    "# controls: \x03 \x04 \x1a \x1c \r \x00 \x1b[2J \x7f \x15 \x17 \x11 \x13 end\n"
    'ikev2 "resp" passive esp from 10.0.2.0/24 to 10.0.1.0/24\n'
    "# no newline at the end"
)


class _Tty:
    """Records what would be typed into a guest's shell; answers a write with the checksum of what the
    guest's decoder would make of it (base64 -d: the platform's own command)."""

    def __init__(self) -> None:
        self.typed: list[str] = []

    def check(self, command: str, *, timeout: float = 60, stdin: str | None = None) -> SimpleNamespace:
        self.typed += [command, stdin or ""]
        return SimpleNamespace(output=hashlib.sha256(base64.b64decode(stdin or "")).hexdigest() + "  -\n")


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_no_byte_of_a_file_is_typed_into_a_guests_tty(platform):
    tty = _Tty()
    host = Host(topology.load(None, PLATFORMS).host("resp"), get_platform(platform), tty, Path("/none"))  # type: ignore[arg-type]
    host.write_file("/etc/iked.conf", CONTROL_CONF, 0o600)  # proven by its sha256, so it arrived intact
    typed = "".join(tty.typed)
    assert not [c for c in typed if not c.isprintable() and c != "\n"], "a control byte reaches the tty"


def test_a_child_bytes_value_cannot_add_lines_to_iked_conf():
    with pytest.raises(gate.GateError, match=r"^--child-bytes: '64K\\nikev2 \"x\"' is not a byte count"):
        traffic.short_lifetimes(20, child_bytes='64K\nikev2 "x"')
    assert traffic.short_lifetimes(20, child_bytes="64K").child_bytes == "64K"


# --- the command line ---------------------------------------------------------------------------------------


def test_a_binary_iked_conf_for_reconfigure_is_one_line(tmp_path):
    binary = tmp_path / "iked.conf"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    line = one_line(ikedlab("reconfigure", "resp", "--iked-conf", str(binary), tmp_path=tmp_path))
    assert line == f"ikedlab: --iked-conf {binary}: not UTF-8 text (byte 0x80 at offset 136)"


def test_traffic_for_ever_is_one_line():
    with pytest.raises(LabError, match=r"^--seconds inf: a positive duration of at most 86400 s$"):
        traffic.packets_for(nbytes=None, seconds=float("inf"), size=1000, interval=0.02)
    with pytest.raises(LabError, match=r"^--seconds nan"):
        traffic.packets_for(nbytes=None, seconds=float("nan"), size=1000, interval=0.02)


@pytest.mark.parametrize(
    "args, says",
    [
        (["exec", "init/../../x", "--", "true"], "HOST: 'init/../../x' is not a host name"),
        (["capture", "../../../tmp/x"], "LINK: '../../../tmp/x' is not a link name"),
        (["--name", "x\n", "status"], "--name: 'x\\n' is not a lab name"),
        (["up", "--iked-conf", "../x=/dev/null"], "--iked-conf: '../x' is not a host name"),
        (["up", "--expect-failure", "(a"], "--expect-failure '(a': not a regular expression"),
    ],
)
def test_names_on_the_command_line_pass_the_gate(tmp_path, args, says):
    env = {"IKEDLAB_LIBVIRT_URI": "test:///default"}
    line = one_line(
        ikedlab(*args, "--platform", "linux", tmp_path=tmp_path, env=env)
        if args[0] == "up"
        else ikedlab(*args, tmp_path=tmp_path, env=env)
    )
    assert line.startswith(f"ikedlab: {says}"), line
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*x*"))


def test_a_bundle_of_any_iked_failure_replays_as_any_failure(tmp_path, monkeypatch):
    # `up --expect-failure` without a pattern records ikedlab's own regex: that one stays a regex.
    from lab.failure import ANY_FAILURE

    archive = _bundle(tmp_path, _manifest(expect_failure=ANY_FAILURE, topology_name="my site.yaml"))
    replayed = open_bundle(archive, tmp_path / "labs" / "x" / "replay")
    assert replay.failure_pattern(replayed, ANY_FAILURE) == ANY_FAILURE
    assert replayed.topology.name == "my site.yaml"
