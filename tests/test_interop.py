"""Interop and versions without a VM: iked choices, the strongSwan dialect, the matrix runner's pieces."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from lab import render, topology
from lab.domains import host_media
from lab.errors import IkedlabError, PlatformError
from lab.images.iked_build import IkedBuild, build_iked, tree_hash
from lab.interop import Cell, Outcome, Side, cell_topology, junit_results, load_matrix, table
from lab.placement import load_topology, resolve_platforms
from lab.platforms import BootMedia, DaemonChoice, get_platform
from lab.platforms.strongswan import parse_swanctl_list_sas

DATA = Path(__file__).parent / "data" / "strongswan"
GUIDE = topology.guide_path().read_text()


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


# --- iked versions and local builds ---------------------------------------------------------------


def test_topology_names_a_gateways_iked_version(tmp_path: Path) -> None:
    text = GUIDE.replace("      peer: resp\n", "      peer: resp\n", 1).replace(
        "  init:\n", '  init:\n    iked: "7.4"\n', 1
    )
    (tmp_path / "t.yaml").write_text(text)
    assert load_topology(tmp_path / "t.yaml").host("init").iked == "7.4"
    (tmp_path / "bad.yaml").write_text(GUIDE.replace("  init:\n", "  init:\n    iked: 7.4\n", 1))
    with pytest.raises(IkedlabError, match=r"hosts\.init\.iked: 7\.4: expected a quoted version"):
        load_topology(tmp_path / "bad.yaml")
    (tmp_path / "lan.yaml").write_text(GUIDE.replace("  initlan:\n", '  initlan:\n    iked: "7.4"\n', 1))
    with pytest.raises(IkedlabError, match=r"hosts\.initlan\.iked: only a gateway"):
        load_topology(tmp_path / "lan.yaml")


class FakeLinux:
    """A platform whose boot media records what was asked."""

    def __init__(self, name: str = "linux") -> None:
        self.real = get_platform(name)
        self.name = name
        self.asked: list[DaemonChoice | None] = []

    def check_daemon_choice(self, host: str, iked: DaemonChoice) -> None:
        self.real.check_daemon_choice(host, iked)

    def boot_media(self, release: str | None = None, iked: DaemonChoice | None = None) -> BootMedia:
        self.asked.append(iked)
        return BootMedia(daemon=f"iked {iked.version if iked and iked.version else '7.2'}")


def test_each_gateway_gets_its_iked_and_each_image_is_made_once() -> None:
    guide = load_topology(None)
    linux = FakeLinux()
    platforms = {h: linux for h in guide.hosts}
    media = host_media(guide, platforms, None, {"init": DaemonChoice("7.4")})  # type: ignore[arg-type]
    assert media["init"].daemon == "iked 7.4" and media["resp"].daemon == "iked 7.2"
    assert linux.asked == [DaemonChoice(), DaemonChoice("7.4")]  # initlan, inet, resp, resplan share one
    with pytest.raises(PlatformError, match=r"init: iked 7\.9 is not on linux \(versions: 7\.2, 7\.4\)"):
        host_media(guide, platforms, None, {"init": DaemonChoice("7.9")})  # type: ignore[arg-type]
    with pytest.raises(IkedlabError, match="iked for 'inet': not a gateway"):
        host_media(guide, platforms, None, {"inet": DaemonChoice("7.4")})  # type: ignore[arg-type]
    openbsd = resolve_platforms(guide, "openbsd")["init"]
    with pytest.raises(PlatformError, match="init: platform openbsd has no iked version to choose"):
        openbsd.check_daemon_choice("init", DaemonChoice("7.4"))


def test_linux_versions_map_to_image_variants() -> None:
    assert get_platform("linux").facts.iked_versions == {"7.2": None, "7.4": "trixie"}
    assert get_platform("strongswan").facts.image_variant == "trixie"


def source_tree(root: Path) -> Path:
    (root / "iked").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text("project(openiked)\n")
    (root / "iked" / "iked.c").write_text('log_info("%s: started", __func__);\n')
    return root


def test_a_one_line_change_is_another_build_and_leftovers_are_not(tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "openiked")
    first = tree_hash(tree)
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tree / "build").mkdir()
    (tree / "build" / "iked").write_bytes(b"\x7fELF")
    assert tree_hash(tree) == first
    (tree / "iked" / "iked.c").write_text('log_info("%s: started, patched", __func__);\n')
    assert tree_hash(tree) != first


def test_a_cached_build_is_reused_and_a_non_tree_is_one_clear_line(tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "openiked")
    entry = tmp_path / "cache" / "iked-builds" / tree_hash(tree)[:16]
    for program in ("usr/sbin/iked", "usr/sbin/ikectl"):
        (entry / program).parent.mkdir(parents=True, exist_ok=True)
        (entry / program).write_bytes(b"built")
    build = build_iked(tree, tmp_path / "cache")  # no compiler runs: the cache has it
    assert isinstance(build, IkedBuild) and build.label == f"iked (local build {tree_hash(tree)[:12]})"
    with pytest.raises(IkedlabError, match="not an OpenIKED portable tree"):
        build_iked(tmp_path, tmp_path / "cache")


# --- strongSwan -----------------------------------------------------------------------------------


def test_swanctl_list_sas_from_a_live_responder() -> None:
    """Captured on resp (strongSwan 6.0.1) with iked 7.4 as the initiator."""
    state = parse_swanctl_list_sas((DATA / "list-sas-resp.txt").read_text())
    assert state.established
    (ike,) = state.ike_sas
    assert not ike.initiator and ike.peer_id == "FQDN/init.example.com" and ike.peer == "192.0.2.1:500"
    assert {(c.direction, c.spi) for c in state.child_sas} == {("in", 0xC1F1C4D9), ("out", 0xA816CB6D)}
    assert {(f.direction, f.src, f.dst) for f in state.flows} == {
        ("out", net("10.0.2.0/24"), net("10.0.1.0/24")),
        ("in", net("10.0.1.0/24"), net("10.0.2.0/24")),
    }


def test_swanctl_list_sas_reads_ike_sa_children_and_flows() -> None:
    state = parse_swanctl_list_sas((DATA / "list-sas-init.txt").read_text())
    assert state.established
    (ike,) = state.ike_sas
    assert (ike.local, ike.peer, ike.state) == ("192.0.2.1:500", "198.51.100.1:500", "ESTABLISHED")
    assert ike.initiator and not ike.natt and ike.peer_id == "FQDN/resp.example.com"
    assert {(c.direction, c.spi, c.src, c.dst) for c in state.child_sas} == {
        ("in", 0xC8A1B2C3, "198.51.100.1", "192.0.2.1"),
        ("out", 0x0F1E2D3C, "192.0.2.1", "198.51.100.1"),
    }
    flows = {(f.direction, f.src, f.dst) for f in state.flows}
    assert flows == {
        ("out", net("10.0.1.0/24"), net("10.0.2.0/24")),
        ("in", net("10.0.2.0/24"), net("10.0.1.0/24")),
        ("out", net("10.0.1.0/24"), net("198.51.100.1/32")),
        ("in", net("198.51.100.1/32"), net("10.0.1.0/24")),
    }
    assert not parse_swanctl_list_sas("").established


def test_swanctl_conf_names_the_guides_ids_flows_and_explicit_proposals() -> None:
    guide = load_topology(None)
    text = render.swanctl_conf(guide, guide.host("init"))
    for line in (
        "local_addrs = 192.0.2.1",
        "remote_addrs = 198.51.100.1",
        "proposals = aes256-sha256-prfsha256-ecp256",
        "id = init.example.com",
        "pubkeys = resp.example.com",
        "local_ts = 10.0.1.0/24, 192.0.2.1/32",
        "remote_ts = 10.0.2.0/24, 198.51.100.1/32",
        "esp_proposals = aes256-sha512",
        "start_action = start",
    ):
        assert re.search(rf"^\s*{re.escape(line)}$", text, re.M), line
    resp = render.swanctl_conf(guide, guide.host("resp"), peer_any=True)
    assert "start_action = none" in resp and "remote_addrs = %any" in resp


def test_strongswan_keeps_keys_where_swanctl_reads_them_and_says_failure_its_way() -> None:
    swan = get_platform("strongswan")
    assert swan.peer_pubkey_path("init.example.com") == "/etc/swanctl/pubkey/init.example.com"
    assert swan.private_key.startswith("/etc/swanctl/ecdsa/")
    line = "Nov 28 04:10:01 12[CFG] no trusted ECDSA public key found for 'init.example.com'"
    assert re.search(swan.auth_failure_pattern("init.example.com"), line)
    iked_line = "ikev2_msg_authverify: authentication failed for FQDN/init.example.com"
    assert re.search(get_platform("linux").auth_failure_pattern("init.example.com"), iked_line)
    assert not re.search(swan.auth_failure_pattern("init.example.com"), iked_line)


def test_libreswan_says_a_failed_signature_its_way() -> None:
    pluto = get_platform("libreswan")
    # pluto 5.2's line in scenario 6 (resp), measured on a libreswan lab.
    line = (
        'Nov 28 08:29:10.837104: "resp" #1: authentication failed: using ECDSA with SHA2_512 for '
        "'@init.example.com' tried preloaded: *ZvyrEYUeR *ZvyrEYUeR"
    )
    assert re.search(pluto.auth_failure_pattern("init.example.com"), line)
    assert not re.search(pluto.auth_failure_pattern("resp.example.com"), line)
    iked_line = "ikev2_msg_authverify: authentication failed for FQDN/init.example.com"
    assert not re.search(pluto.auth_failure_pattern("init.example.com"), iked_line)


# --- the matrix -----------------------------------------------------------------------------------


def test_the_shipped_matrix_has_the_required_cells() -> None:
    names = {c.name for c in load_matrix().cells}
    for pair in (
        "iked-7.2--iked-7.4",
        "iked-7.4--iked-7.2",
        "iked-7.2--strongswan",
        "strongswan--iked-7.2",
        "iked-7.2--libreswan",
        "libreswan--iked-7.2",
    ):
        assert pair in names


def test_a_cells_topology_is_the_guide_with_two_sides(tmp_path: Path) -> None:
    cell = Cell(Side("iked-7.4", "linux", "7.4"), Side("strongswan", "strongswan"))
    (tmp_path / "cell.yaml").write_text(cell_topology(cell))
    t = load_topology(tmp_path / "cell.yaml")
    assert (t.host("init").platform, t.host("init").iked) == ("linux", "7.4")
    assert (t.host("resp").platform, t.host("resp").iked) == ("strongswan", None)
    assert t.host("initlan").platform is None


def test_junit_outcomes_and_the_table(tmp_path: Path) -> None:
    (tmp_path / "j.xml").write_text(
        '<testsuites><testsuite name="x">'
        '<testcase name="test_a" /><testcase name="test_b"><failure message="m" /></testcase>'
        '<testcase name="test_c"><skipped type="pytest.xfail" message="r" /></testcase>'
        '<testcase name="test_d"><skipped type="pytest.skip" message="s" /></testcase>'
        "</testsuite></testsuites>"
    )
    results = junit_results(tmp_path / "j.xml")
    assert results == {"test_a": "pass", "test_b": "fail", "test_c": "xfail", "test_d": "skip"}
    text = table([Outcome("a--b", results, 61.0), Outcome("c--d", {}, 0.0, "not run: no openbsd image here")])
    assert "a--b" in text and "c--d: not run: no openbsd image here" in text
    assert re.search(r"^test_b\s+fail", text, re.M)


def test_a_whole_cell_known_failure_names_the_lab_error_it_stands_for(tmp_path: Path) -> None:
    """A cell whose lab does not come up xfails only for the error it is known for (lab_error)."""
    matrix = (
        "sides:\n  a: {platform: linux}\n  b: {platform: libreswan}\ncells:\n  - [a, b]\n"
        "known:\n  - {cell: a--b, test: '*', reason: r, reference: ref}\n"
    )
    (tmp_path / "m.yaml").write_text(matrix)
    with pytest.raises(IkedlabError, match=r"known\[0\]: a whole-cell entry \(test '\*'\) needs lab_error"):
        load_matrix(tmp_path / "m.yaml")
    shipped = [k for k in load_matrix().known if k["test"] == "*"]
    assert shipped and all(k["lab_error"] for k in shipped)
    seen = 'init: iked gave up on the tunnel: "init" #2: malformed payload in packet: ikev2 cert encoding '
    seen += "of IKEv2 Certificate Request Payload has an unknown value: 201 (0xc9)"
    assert all(re.search(k["lab_error"], seen) for k in shipped)
    assert not any(re.search(k["lab_error"], "init: the console closed") for k in shipped)
