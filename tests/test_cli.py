"""The ikedlab command: bad input gives one clear line and a non-zero exit, and creates nothing."""

import shutil
import subprocess
import sys

import pytest
from fakes import record_blueprint

from lab import topology


def ikedlab(*args, env=None, tmp_path=None):
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path or "/tmp")}
    if tmp_path:
        environment["IKEDLAB_STATE_DIR"] = str(tmp_path / "state")
        environment["IKEDLAB_CACHE_DIR"] = str(tmp_path / "cache")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, env=environment, timeout=60
    )


def one_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines and lines[0].startswith("ikedlab: ") and "Traceback" not in done.stderr, done.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), done.stderr
    return lines[0]


def test_a_bad_topology_names_file_and_field_before_anything_starts(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text(topology.guide_path().read_text().replace("resplan: 10.0.2.2", "resplan: 10.0.3.2"))
    line = one_line(
        ikedlab(
            "up",
            "--platform",
            "linux",
            "--topology",
            str(bad),
            tmp_path=tmp_path,
            env={"IKEDLAB_LIBVIRT_URI": "test:///default"},
        )
    )
    assert (
        line
        == "ikedlab: site.yaml: links.lan2.ends.resplan: 10.0.3.2 is outside the link's subnet 10.0.2.0/24"
    )
    assert not (tmp_path / "state").exists(), "a refused topology must leave nothing behind"


def test_an_unknown_platform_is_refused(tmp_path):
    line = one_line(ikedlab("up", "--platform", "obsd", tmp_path=tmp_path))
    assert line == "ikedlab: unknown platform 'obsd' (known: libreswan, linux, openbsd, strongswan)"


def test_a_bad_lab_name(tmp_path):
    assert one_line(ikedlab("--name", "No_Way", "status", tmp_path=tmp_path)).startswith(
        "ikedlab: --name: 'No_Way' is not a lab name: 1-20 lower-case letters"
    )


def test_missing_libvirtd_says_how_to_start_it(tmp_path):
    done = ikedlab(
        "down", tmp_path=tmp_path, env={"IKEDLAB_LIBVIRT_URI": "qemu+unix:///system?socket=/nonexistent"}
    )
    assert one_line(done).startswith("ikedlab: cannot connect to libvirt at qemu+unix:///system")
    assert "hint: start libvirtd" in done.stderr


def test_exec_on_a_lab_that_is_not_up(tmp_path):
    assert (
        one_line(ikedlab("exec", "init", "--", "true", tmp_path=tmp_path))
        == "ikedlab: lab 'default' is not up"
    )


def test_exec_on_an_unknown_host(tmp_path):
    record_blueprint(tmp_path / "state" / "labs" / "default")
    line = one_line(
        ikedlab("exec", "gw", "--", "true", tmp_path=tmp_path, env={"IKEDLAB_LIBVIRT_URI": "test:///default"})
    )
    assert line == "ikedlab: no host 'gw' in lab 'default' (hosts: initlan, init, inet, resp, resplan)"


def test_exec_without_a_command(tmp_path):
    assert one_line(ikedlab("exec", "init", tmp_path=tmp_path)) == "ikedlab: exec: no command given"


def test_openbsd_without_an_image_points_at_the_build_and_at_linux(tmp_path):
    done = ikedlab(
        "up", "--platform", "openbsd", tmp_path=tmp_path, env={"IKEDLAB_LIBVIRT_URI": "test:///default"}
    )
    assert one_line(done) == "ikedlab: no OpenBSD image in the cache"
    assert "ikedlab image build --platform openbsd" in done.stderr and "--platform linux" in done.stderr


@pytest.mark.parametrize("args", [["--help"], ["up", "--help"], ["image", "build", "--help"]])
def test_help(args):
    assert subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True).returncode == 0


def test_iked_conf_for_a_host_that_does_not_exist(tmp_path):
    mine = tmp_path / "mine.conf"
    mine.write_text("ikev2 esp from any to any\n")
    done = ikedlab(
        "up",
        "--platform",
        "linux",
        "--iked-conf",
        f"nosuchhost={mine}",
        tmp_path=tmp_path,
        env={"IKEDLAB_LIBVIRT_URI": "test:///default"},
    )
    assert one_line(done) == (
        f"ikedlab: --iked-conf nosuchhost={mine}: no gateway 'nosuchhost' in guide.yaml"
        " (gateways: init, resp)"
    )
    assert not (tmp_path / "state").exists()


@pytest.mark.skipif(shutil.which("iked", path="/usr/sbin:/usr/bin:/sbin:/bin") is None, reason="no iked here")
def test_a_broken_iked_conf_is_named_by_file_and_line_before_any_guest_boots(tmp_path, monkeypatch, capsys):
    """Judged by the iked the gateway's image carries, before anything is created. Here the host's own iked
    stands in for the bookworm image's (the same Debian package), so no image is built in a fast test."""
    from lab import cli
    from lab.ikedconf import host_judge
    from lab.platforms import BootMedia, Platform, platform_names

    mine = tmp_path / "mine.conf"
    mine.write_text('resp="198.51.100.1"\n\nikev2 esp frm any to any local $resp\n')
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IKEDLAB_LIBVIRT_URI", "test:///default")
    platform_names()
    media = BootMedia(tmp_path / "vmlinuz", tmp_path / "initrd.img", "console=ttyS0", judge=host_judge())
    monkeypatch.setattr(
        Platform._registry["linux"], "boot_media", lambda self, release=None, iked=None: media
    )
    assert cli.main(["up", "--platform", "linux", "--iked-conf", f"resp={mine}"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"ikedlab: {mine}:3: syntax error"]
    assert not (tmp_path / "state").exists(), "nothing booted, no lab made"
