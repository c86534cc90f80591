"""iked.conf rendered for the guide's topology is the guide's file, for init and mirrored for resp."""

import difflib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import plan, render, topology
from lab.platforms import get_platform

GUIDE = Path(__file__).parent / "data" / "guide"  # the guide's own files
GUIDE_INIT = (GUIDE / "iked.conf.init").read_text()
GUIDE_RESP = (GUIDE / "iked.conf.resp").read_text()


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


def mixed(tmp_path) -> topology.Topology:
    text = topology.guide_path().read_text()
    text = text.replace("  init:\n", "  init:\n    platform: openbsd\n").replace(
        "  resp:\n", "  resp:\n    platform: linux\n"
    )
    path = tmp_path / "mixed.yaml"
    path.write_text(text)
    return topology.load(path, ("linux", "openbsd"))


def test_a_mixed_lab_validates_and_both_sides_get_proposals_both_platforms_can_do(tmp_path):
    t = mixed(tmp_path)
    assert (t.host("init").platform, t.host("resp").platform) == ("openbsd", "linux")
    platforms = {h.name: h.platform or "linux" for h in t.hosts.values()}
    for name in ("init", "resp"):
        proposals = render.proposals_for(t, platforms, t.host(name))
        conf = render.iked_conf(t, t.host(name), proposals=proposals)
        assert "\tikesa enc aes-256 auth hmac-sha2-256 prf hmac-sha2-256 group ecp256 \\\n" in conf
        child = next(line for line in conf.splitlines() if "childsa" in line)
        assert "gcm" not in child and "hmac-sha2-256" not in child  # what OpenIKED on Linux cannot do for ESP
    assert render.proposals_for(guide(), {h: "linux" for h in guide().hosts}, guide().host("init")) is None


def test_render_lab_writes_both_gateways_files_for_a_mixed_lab(tmp_path):
    mixed(tmp_path)
    written = plan.render_lab(tmp_path / "mixed.yaml", "linux", tmp_path / "out")
    init_conf = tmp_path / "out" / "init" / "files" / "etc" / "iked.conf"
    resp_conf = tmp_path / "out" / "resp" / "files" / "etc" / "iked.conf"
    assert init_conf in written and resp_conf in written
    assert (tmp_path / "out" / "init" / "files" / "etc" / "hostname.vio0").exists()  # init speaks OpenBSD
    assert "/usr/sbin/nft" in (tmp_path / "out" / "resp" / "provision.sh").read_text()  # resp speaks Linux
    assert "ikesa enc aes-256" in init_conf.read_text() and "ikesa enc aes-256" in resp_conf.read_text()


IKED = shutil.which("iked") or ("/usr/sbin/iked" if os.path.exists("/usr/sbin/iked") else None)


@pytest.mark.skipif(not IKED, reason="iked is not installed on this host (apt-get install openiked)")
@pytest.mark.parametrize("variant", ["guide", "peer_any", "proposals", "dpd"])
def test_iked_itself_accepts_every_rendered_variant(tmp_path, variant):
    t = guide()
    options = {
        "guide": {},
        "peer_any": {"peer_any": True},
        "proposals": {"proposals": render.Proposals()},
        "dpd": {"dpd_interval": 5},
    }[variant]
    for name in ("init", "resp"):
        conf = tmp_path / f"{name}.conf"
        if variant == "peer_any" and name == "init":
            options = {}  # `peer any` is for the passive side: iked refuses it on an active one
        conf.write_text(render.iked_conf(t, t.host(name), **options))
        conf.chmod(0o600)
        done = subprocess.run([IKED, "-n", "-f", str(conf)], capture_output=True, text=True)
        assert "configuration OK" in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["init", "resp"])
@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_provisioned_iked_conf_is_the_guides_on_every_platform(name: str, platform: str) -> None:
    """What provisioning writes is the guide's text (diffed); only comment lines may add to it."""
    from lab.provision import Options, rendered_ike_conf

    t = guide()
    conf = rendered_ike_conf(t, {h: get_platform(platform) for h in t.hosts}, name, Options())
    want = (GUIDE / f"iked.conf.{name}").read_text()
    diff = "".join(
        difflib.unified_diff(want.splitlines(True), body(conf).splitlines(True), "guide", "rendered")
    )
    assert not diff, diff


def test_linux_iked_conf_says_why_its_sas_differ() -> None:
    from lab.provision import Options, rendered_ike_conf

    t = guide()
    linux = rendered_ike_conf(t, {h: get_platform("linux") for h in t.hosts}, "init", Options())
    openbsd = rendered_ike_conf(t, {h: get_platform("openbsd") for h in t.hosts}, "init", Options())
    assert "# Linux: OpenIKED portable installs SAs through PF_KEY, which cannot do AES-GCM" in linux
    assert "hmac-sha2-384" in linux and "PF_KEY" not in openbsd


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
@pytest.mark.parametrize("name", ["init", "resp"])
def test_gateway_sysctl_conf_has_the_guides_three_lines(platform: str, name: str) -> None:
    from lab.platforms import FileSpec, get_platform

    actions = get_platform(platform).network_actions(guide().host(name))
    written = {a.path: a.content for a in actions if isinstance(a, FileSpec)}
    assert body(written["/etc/sysctl.conf"]) == (GUIDE / "sysctl.conf.gateway").read_text()
    if platform == "linux":
        assert "net.ipv4.ip_forward" in written["/etc/sysctl.conf"]  # says how Linux spells it
