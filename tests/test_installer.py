"""The unattended OpenBSD install dialogue against a fake serial peer, and the install.conf it types."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from lab.images import cached_openbsd_image
from lab.images.installer import (
    MENU,
    PER_MACHINE_FILES,
    PS2,
    RC_CONF_LOCAL,
    InstallerChecksumFailed,
    InstallerError,
    InstallerNoAnswer,
    InstallerStalled,
    InstallerTimeout,
    Timeouts,
    Typing,
    run_install,
)
from lab.images.media import Media
from lab.images.openbsd import qemu_argv, recipe_hash, render_install_conf, ttys_lines
from lab.platforms.openbsd import LAB_ROOT_PASSWORD

FAKE = Path(__file__).parent / "data" / "openbsd" / "fake_installer.py"
FAST = Timeouts(boot=10, prompt=10, install=30, question_stall=1.5, work_stall=5, halt=5)
QUICK = Typing(chunk=16, delay=0)


class Peer:
    def __init__(self, scenario: str, tmp_path: Path) -> None:
        self.record_path = tmp_path / "record.json"
        self.child = pexpect.spawn(
            sys.executable, [str(FAKE), scenario, str(self.record_path)], encoding="utf-8", timeout=10
        )
        self.child.delaybeforesend = None  # the Typing knob is the only pacing

    @property
    def record(self) -> dict:
        if self.child.isalive():
            self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=0.5)  # let it finish writing
        self.child.close(force=True)
        return json.loads(self.record_path.read_text())


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[object]:
    peers: list[Peer] = []

    def make(scenario: str) -> Peer:
        peers.append(Peer(scenario, tmp_path))
        return peers[-1]

    yield make
    for p in peers:
        p.child.close(force=True)


@pytest.fixture(scope="module")
def conf() -> str:
    return render_install_conf(LAB_ROOT_PASSWORD, release="7.9")


# --- install.conf -------------------------------------------------------------------------------------


def answers(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def test_conf_answers_every_question_without_a_default(conf):
    given = answers(conf)
    assert given["System hostname"] == "ikedlab"
    assert given["Password for root account"] == LAB_ROOT_PASSWORD
    assert given["What timezone are you in"] == "UTC"
    assert given["Location of sets"] == "cd0"
    assert given["Directory does not contain SHA256.sig. Continue without verification"] == "yes"


def test_conf_other_choices(conf):
    given = answers(conf)
    assert given["X Window System"] == "no"
    assert given["Change the default console to com0"] == "yes"
    assert given["Which speed should com0 use"] == "115200"
    assert given["Set name(s)"].split() == ["-x*", "-game*", "-man*", "-comp*"]
    # distrib/miniroot/install.sub: with -a the script exits after CONGRATULATIONS (`$AI && exit`)
    # and never asks "Exit to (S)hell, (H)alt or (R)eboot?"; an answer for it would be dead text.
    assert not any(key.startswith("Exit to") for key in given)


def test_conf_is_plain_lines(conf):
    lines = conf.strip().splitlines()
    assert all(" = " in line for line in lines)  # no template comments leak into the answer file
    assert all(len(line) < 78 for line in lines)  # each fits on one line of an 80-column console
    assert "{{" not in conf and "{#" not in conf


def test_conf_rendering_is_parameterised():
    text = render_install_conf(hostname="gw", root_password="pw", timezone="Europe/Paris")
    given = answers(text)
    assert (
        given["System hostname"],
        given["Password for root account"],
        given["What timezone are you in"],
    ) == (
        "gw",
        "pw",
        "Europe/Paris",
    )


# --- the dialogue -------------------------------------------------------------------------------------


def test_successful_install(peer, conf):
    p = peer("ok")
    result = run_install(p.child, conf, FAST, QUICK, release="7.9", ttys=ttys_lines())
    assert result.release == "7.9"
    record = p.record
    assert record["loader"] == ["set tty com0", "boot"]
    assert record["menu"] == "S"
    assert record["confs"] == [conf.strip() + "\n"]
    asked = record["answers"]
    seen = dict(reversed(asked))  # the first answer to each question
    assert seen["System hostname? (short form, e.g. 'foo')"] == "ikedlab"
    assert [a for q, a in asked if q.startswith("Location of sets?")] == ["cd0", "done"]
    assert seen["What timezone are you in? ('?' for list)"] == "UTC"
    assert seen["Which speed should com0 use? (or 'done')"] == "115200"
    assert not any(q.startswith("Exit to") for q, _ in asked)
    commands = record["commands"]
    assert "install -af /install.conf" in commands
    cleanup = next(c for c in commands if c.startswith("{ test -f /mnt/etc/rc.conf"))
    assert f"rm -f {' '.join(PER_MACHINE_FILES)} " in cleanup
    assert "echo library_aslr=NO >>/mnt/etc/rc.conf.local" in cleanup
    assert record["rc_conf_local"] == "library_aslr=NO\n"
    assert record["relink_kit_left"] is False  # KARL: /etc/rc's reorder_kernel finds no kit
    assert commands[-1] == "halt -p"
    assert record["reset"]  # the key after "Please press any key to reboot": QEMU exits on the reset
    assert record["unknown"] == []  # every command typed is one the fake (and the ramdisk's ksh) knows
    # ikedlab's control channel: a root getty on tty01 (com1), the learner's com0 untouched.
    ttys = {fields[0]: fields for fields in (line.split() for line in record["ttys"].splitlines())}
    assert ttys["tty01"][1:] == ['"/usr/libexec/getty', 'std.115200"', "vt220", "on", "secure"]
    assert ttys["tty00"][-2:] == ["on", "secure"] and len(ttys) == 6
    assert all(len(c) < 255 for c in commands)  # OpenBSD's terminal line limit (MAX_CANON)


def test_the_ramdisk_shell_names_the_host_after_the_install(peer, conf):
    # bin/ksh main.c 1.100 sets PS1 to `\\h\\$ ` and lex.c 1.80 expands \\h to the short host name: bare "# "
    # on the ramdisk, "ikedlab# " once install.sub has set the name. The fake, left with ksh's default PS1,
    # shows exactly that: a dialogue waiting for "# " after CONGRATULATIONS would wait out its stall timeout.
    from lab.images.installer import RAMDISK_PROMPT

    p = peer("ok")
    child = p.child
    for typed in ("set tty com0", "boot"):
        child.expect("boot> ")
        child.send(typed + "\r")
    child.expect(MENU)
    child.send("S\r")
    child.expect(RAMDISK_PROMPT)
    assert child.after.lstrip("\r\n") == "# "  # no host name on the ramdisk yet
    child.send("cat > /install.conf <<'EOF'\r")
    for line in conf.strip().splitlines():
        child.expect(PS2)
        child.send(line + "\r")
    child.expect(PS2)
    child.send("EOF\r")
    child.expect(RAMDISK_PROMPT)
    child.send("install -af /install.conf\r")
    child.expect("CONGRATULATIONS!", timeout=20)
    child.expect(RAMDISK_PROMPT)
    assert child.after.lstrip("\r\n") == "ikedlab# "
    assert p.record["prompts"] == ["# ", "# ", "ikedlab# "]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_builder_makes_the_golden_image_through_the_fake_install_vm(tmp_path, monkeypatch):
    # The image builder, whole, with the fake VM where QEMU would be: boot, install, the post-install
    # prompt (which ksh shows as "ikedlab# " unless told otherwise), cleaning, halt and QEMU's exit.
    from lab.images import openbsd as builder

    iso = tmp_path / "install79.iso"
    iso.write_bytes(b"iso")
    record = tmp_path / "vm.json"

    def fake_fetch(release, arch, mirror, iso_arg, cache_dir, **kwargs):
        return Media(iso, False, "NOT VERIFIED (--insecure, no SHA256.sig)", "ab" * 32, release, arch)

    monkeypatch.setattr(builder, "fetch_media", fake_fetch)
    monkeypatch.setattr(builder, "qemu_argv", lambda *_: [sys.executable, str(FAKE), "ok", str(record)])
    monkeypatch.setattr(builder, "Typing", lambda: QUICK)
    monkeypatch.setattr(builder, "require", lambda program, package=None: shutil.which(program) or program)
    image = builder.build_openbsd_image(
        "7.9", iso=iso, insecure=True, cache_dir=tmp_path, timeouts=FAST, root_password=LAB_ROOT_PASSWORD
    )
    assert image.path.is_file() and image.manifest["release"] == "7.9"
    seen = json.loads(record.read_text())
    assert seen["commands"][-1] == "halt -p" and seen["reset"]
    assert seen["relink_kit_left"] is False
    transcript = (tmp_path / "openbsd" / "openbsd-7.9-amd64.install.log").read_text()
    assert "CONGRATULATIONS!" in transcript and "rebooting..." in transcript


def test_golden_image_carries_no_shared_seed_and_no_dead_removals():
    # install.sub's store_random leaves both seed files in the installed system; every guest booted from
    # one image would start from the same ones. /etc/rc's make_keys makes the iked and ssh keys at first
    # boot and the installer makes none, so removing them from the image would do nothing.
    assert {"/mnt/etc/random.seed", "/mnt/var/db/host.random"} <= set(PER_MACHINE_FILES)
    assert not [path for path in PER_MACHINE_FILES if "/iked/" in path or "/ssh/" in path]


def test_image_without_comp_turns_off_library_relinking():
    # /etc/rc's reorder_libs relinks libc and libcrypto with `cc -shared`, and cc comes in the comp set:
    # an image without comp would print "reordering libraries: failed." at every boot.
    from lab.images.openbsd import SETS

    assert "-comp*" in SETS.split()
    assert "library_aslr=NO" in RC_CONF_LOCAL


def test_disklabel_comment_line_is_not_the_prompt(peer, conf):
    # disklabel's layout header starts with "#"; a read that ends right after it looked like the shell
    # prompt, and the install was reported as "quit before CONGRATULATIONS".
    p = peer("race")
    assert run_install(p.child, conf, FAST, QUICK).release == "7.9"
    assert p.record["commands"][-1] == "halt -p"


def test_installer_quitting_early_is_caught_after_a_quiet_prompt(peer, conf):
    p = peer("quit")
    started = time.monotonic()
    with pytest.raises(InstallerError) as caught:
        run_install(p.child, conf, FAST, QUICK)
    assert str(caught.value) == (
        "the OpenBSD installer quit before CONGRATULATIONS (last output: '/' must be configured!)"
    )
    assert time.monotonic() - started < FAST.work_stall  # the quiet prompt, not the long stall, told
    assert "halt -p" not in p.record["commands"]


def test_timezone_outside_the_installers_list_has_no_answer(peer):
    # install.sub checks the answer against its zone list; a wrong one is asked again, and the response
    # file's line is spent: "Question has no answer in response file".
    p = peer("ok")
    with pytest.raises(InstallerNoAnswer, match="timezone"):
        run_install(
            p.child,
            render_install_conf(LAB_ROOT_PASSWORD, release="7.9", timezone="Europe/Nowhere"),
            FAST,
            QUICK,
        )


def test_utc_is_in_the_installers_zone_list(tmp_path):
    # install.sub lists zones with `ls -1dF` over the base set's zoneinfo and the answer must equal an
    # entry; zic (usr.sbin/zic/zic.c, dolink) makes a Link such as UTC -> Etc/UTC a hard link, which ls -F
    # does not mark, while a symbolic link would be listed as "UTC@" and not match.
    zoneinfo = tmp_path / "zoneinfo"
    (zoneinfo / "Etc").mkdir(parents=True)
    (zoneinfo / "Etc" / "UTC").write_bytes(b"TZif")
    os.link(zoneinfo / "Etc" / "UTC", zoneinfo / "UTC")
    os.symlink("Etc/UTC", zoneinfo / "Zulu")
    names = sorted(p.name for p in zoneinfo.iterdir())
    listed = subprocess.run(["ls", "-1dF", *names], cwd=zoneinfo, capture_output=True, text=True, check=True)
    tzlist = listed.stdout.split()
    timezone = answers(render_install_conf(LAB_ROOT_PASSWORD, release="7.9"))["What timezone are you in"]
    assert timezone in tzlist
    assert "Zulu" not in tzlist and "Zulu@" in tzlist  # the case a symbolic link would be


def test_install_without_boot_prompt(peer, conf):
    p = peer("direct")  # the medium's boot.conf already moved the loader to com0
    assert run_install(p.child, conf, FAST, QUICK).release == "7.9"
    assert "loader" not in p.record


def test_silent_console_times_out_at_boot(peer, conf):
    p = peer("silent")
    # 5 s, not 1: the fake itself (Python, strings.yaml) took over a second to print under load 8.
    quick_boot = Timeouts(boot=5, prompt=1, install=5, question_stall=1, work_stall=2, halt=1)
    with pytest.raises(InstallerTimeout) as caught:
        run_install(p.child, conf, quick_boot, QUICK)
    assert str(caught.value) == (
        "no boot> prompt or installer greeting from the OpenBSD media within 5s "
        "(last output: Booting from DVD/CD...)"
    )


def test_wrong_release_refused_at_the_greeting(peer, conf):
    p = peer("ok")
    with pytest.raises(InstallerError, match="OpenBSD 7.9, not 7.8"):
        run_install(p.child, conf, FAST, QUICK, release="7.8")
    assert "install -af /install.conf" not in p.record["commands"]


def test_garbled_conf_is_typed_again(peer, conf):
    p = peer("garble")
    run_install(p.child, conf, FAST, QUICK)
    confs = p.record["confs"]
    assert len(confs) == 2
    assert confs[0] != confs[1] == conf.strip() + "\n"


def test_question_without_answer(peer, conf):
    # install.sub's _autorespond: no line for a question without a default ends the install with the
    # question, lowercased, in the message.
    p = peer("ok")
    without_hostname = "\n".join(line for line in conf.splitlines() if not line.startswith("System hostname"))
    with pytest.raises(InstallerNoAnswer) as caught:
        run_install(p.child, without_hostname, FAST, QUICK)
    assert caught.value.question == "system hostname? (short form, e.g. 'foo')"
    assert "\n" not in str(caught.value)
    assert "install.conf does not answer" in str(caught.value)


def test_checksum_failure(peer, conf):
    p = peer("checksum")
    with pytest.raises(InstallerChecksumFailed) as caught:
        run_install(p.child, conf, FAST, QUICK)
    assert caught.value.set_name == "base79.tgz"
    assert str(caught.value) == "the OpenBSD installer found a bad checksum for base79.tgz: damaged media"


def test_stalled_prompt(peer, conf):
    p = peer("stall")
    with pytest.raises(InstallerStalled) as caught:
        run_install(p.child, conf, FAST, QUICK)
    assert caught.value.waiting_at.startswith("Which disk is the root disk?")
    assert re.fullmatch(
        r"the OpenBSD installer stalled: no output for \d+s at 'Which disk .*'", str(caught.value)
    )


def test_missing_answer_in_our_conf_is_caught(peer, conf):
    p = peer("ok")
    without_timezone = "\n".join(line for line in conf.splitlines() if not line.startswith("What timezone"))
    with pytest.raises(InstallerNoAnswer, match="timezone"):
        run_install(p.child, without_timezone, FAST, QUICK)


def test_vm_exit_is_an_error(peer, conf):
    p = peer("vanish")
    with pytest.raises(InstallerError, match="^the OpenBSD VM exited during the install$"):
        run_install(p.child, conf, FAST, QUICK)


# --- the image builder's pure parts --------------------------------------------------------------------


def test_qemu_argv_is_headless_and_offline(tmp_path):
    argv = qemu_argv("qemu-system-x86_64", tmp_path / "d.qcow2", tmp_path / "install79.iso", "tcg")
    joined = " ".join(argv)
    assert "-nic none" in joined and "-serial stdio" in joined and "-no-reboot" in joined
    assert "graphics=off" in joined and "-accel tcg" in joined
    assert f"file={tmp_path / 'install79.iso'},media=cdrom" in joined


def test_recipe_hash_follows_the_recipe(tmp_path):
    (tmp_path / "install.conf.j2").write_text("System hostname = {{ hostname }}\n")
    first = recipe_hash(tmp_path)
    (tmp_path / "install.conf.j2").write_text("System hostname = x{{ hostname }}\n")
    assert recipe_hash(tmp_path) != first


def test_cache_lookup(tmp_path):
    assert cached_openbsd_image("7.9", tmp_path) is None
    directory = tmp_path / "openbsd"
    directory.mkdir()
    (directory / "openbsd-7.9-amd64.qcow2").write_bytes(b"QFI\xfb")
    manifest = {"key": "openbsd-7.9-amd64-x", "release": "7.9", "recipe": recipe_hash(), "verified": True}
    (directory / "openbsd-7.9-amd64.json").write_text(json.dumps(manifest))
    image = cached_openbsd_image("7.9", tmp_path)
    assert image is not None and image.verified and image.key == "openbsd-7.9-amd64-x"
    assert cached_openbsd_image(None, tmp_path) == image  # the newest cached release
    manifest["recipe"] = "stale"
    (directory / "openbsd-7.9-amd64.json").write_text(json.dumps(manifest))
    assert cached_openbsd_image("7.9", tmp_path) is None  # the recipe changed: rebuild


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_build_writes_image_and_manifest_atomically(tmp_path, monkeypatch):
    from lab.images import openbsd as builder

    iso = tmp_path / "install79.iso"
    iso.write_bytes(b"iso")
    fetched = []

    def fake_fetch(release, arch, mirror, iso_arg, cache_dir, **kwargs):
        fetched.append((release, kwargs["insecure"]))
        return Media(iso, False, "NOT VERIFIED (--insecure, no SHA256.sig)", "ab" * 32, release, arch)

    def fake_install(qemu, disk, media, release, transcript, timeouts, root_password):
        assert disk.exists() and disk.name.endswith(".partial")  # built beside, renamed at the end
        return 1234.0

    monkeypatch.setattr(builder, "fetch_media", fake_fetch)
    monkeypatch.setattr(builder, "_install", fake_install)
    monkeypatch.setattr(builder, "require", lambda program, package=None: shutil.which(program) or program)
    image = builder.build_openbsd_image("7.9", iso=iso, insecure=True, cache_dir=tmp_path, root_password="pw")
    assert image.path == tmp_path / "openbsd" / "openbsd-7.9-amd64.qcow2" and image.path.is_file()
    assert image.manifest["insecure"] is True and image.manifest["iso_sha256"] == "ab" * 32
    assert image.manifest["recipe"] == recipe_hash() and image.manifest["install_seconds"] == 1234
    assert not list((tmp_path / "openbsd").glob(".*"))  # no partial files left behind
    again = builder.build_openbsd_image("7.9", iso=iso, insecure=True, cache_dir=tmp_path, root_password="pw")
    assert again == image and len(fetched) == 1  # the cache answers; nothing fetched or installed


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_snapshot_image_is_named_by_its_build_date(tmp_path, monkeypatch):
    # `--release snapshots`: the installer greets with the snapshot's version (8.0 after 7.9), the image is
    # one per build, and the newest release lookup (`up` without --release) never picks a snapshot.
    from lab.images import openbsd as builder

    iso = tmp_path / "install80.iso"
    iso.write_bytes(b"iso")
    buildinfo = tmp_path / "BUILDINFO"
    buildinfo.write_text("Build date: 1779246720 - Wed May 20 03:12:00 UTC 2026\n")
    greeted = []

    def fake_current(arch, mirror, cache_dir):
        return None, tmp_path / "SHA256.sig", buildinfo

    def fake_fetch(release, arch, mirror, iso_arg, cache_dir, **kwargs):
        return Media(iso, True, "signify: ...", "cd" * 32, release, arch, "8.0", "20260520-0312")

    def fake_install(qemu, disk, media, version, transcript, timeouts, root_password):
        greeted.append(version)
        return 99.0

    monkeypatch.setattr(builder, "current_snapshot", fake_current)
    monkeypatch.setattr(builder, "fetch_media", fake_fetch)
    monkeypatch.setattr(builder, "_install", fake_install)
    monkeypatch.setattr(builder, "require", lambda program, package=None: shutil.which(program) or program)
    image = builder.build_openbsd_image("snapshots", cache_dir=tmp_path, root_password="pw")
    assert image.path.name == "openbsd-snapshot-20260520-0312-amd64.qcow2"
    assert (image.manifest["version"], image.manifest["build"], greeted) == ("8.0", "20260520-0312", ["8.0"])
    assert cached_openbsd_image("snapshots", tmp_path) == image
    assert cached_openbsd_image(None, tmp_path) is None  # releases only
    again = builder.build_openbsd_image("snapshots", cache_dir=tmp_path, root_password="pw")
    assert again == image and greeted == ["8.0"]  # the same build: cached, nothing installed
