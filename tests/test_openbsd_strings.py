"""Every OpenBSD string ikedlab waits for is one read in OpenBSD's source (tests/data/openbsd/strings.yaml).

A pattern in the code that none of the recorded strings matches is a belief, not a fact: these tests fail on
it. They also fail on a pattern added to the installer dialogue without being held against the list here,
on a recorded entry without its source and revision, and on images/openbsd/README.md's table
drifting from the list.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from lab.images import installer
from lab.platforms import get_platform, parsers
from lab.platforms import openbsd as openbsd_platform

DATA = Path(__file__).parent / "data" / "openbsd"


def _load_strings_module():
    spec = importlib.util.spec_from_file_location("openbsd_strings", DATA / "strings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["openbsd_strings"] = module
    spec.loader.exec_module(module)
    return module


strings = _load_strings_module()
RECORDED = strings.load()


def shown(name: str, *args: object) -> str:
    """A recorded string as the program shows it (a format filled with plausible values)."""
    entry = RECORDED[name]
    return entry.text if entry.text is not None else entry.render(*args)


# Each pattern the installer dialogue waits for, and the recorded strings it must find.
INSTALLER = {
    "BOOT_PROMPT": ["loader.prompt"],
    "WELCOME": ["ramdisk.welcome"],
    "MENU": ["ramdisk.menu"],
    "RAMDISK_PROMPT": ["ksh.ps1.ramdisk", "ksh.ps1.installed"],
    "PS2": ["ksh.ps2"],
    "CONGRATULATIONS": ["install.congratulations"],
    "NO_ANSWER": ["install.no_answer"],
    "CHECKSUM_FAILED": ["install.checksum_failed"],
    "INSTALL_FAILED": ["install.install_failed"],
    "PANIC": ["kernel.panic"],
    "PRESS_KEY": ["kernel.press_key"],
}
FORMAT_ARGS = {
    "install.no_answer": ("what timezone are you in? ('?' for list)",),
    "install.checksum_failed": ("base79.tgz",),
    "install.install_failed": ("base79.tgz",),
    "kernel.panic": ("uvm_fault(0xffffffff82a5e8b0, 0x0, 0, 1) -> e",),
}


def test_every_recorded_string_names_its_source_and_revision():
    for entry in RECORDED.values():
        assert entry.source and entry.revision, entry.id
        assert entry.text is not None or entry.format is not None or entry.formats, entry.id
        if entry.text is not None and entry.format is not None:
            assert entry.regex().fullmatch(entry.text), f"{entry.id}: its text is not its format filled in"


@pytest.mark.parametrize("name", sorted(INSTALLER))
def test_installer_waits_only_for_recorded_strings(name):
    pattern = getattr(installer, name)
    for recorded in INSTALLER[name]:
        text = shown(recorded, *FORMAT_ARGS.get(recorded, ()))
        # A prompt is matched at the end of what was read, after a line break or at the start.
        assert pattern.search(text) or pattern.search("\n" + text), f"{name} misses {recorded}: {text!r}"


def test_every_installer_pattern_is_held_against_the_record():
    patterns = {key for key, value in vars(installer).items() if isinstance(value, re.Pattern)}
    unheld = patterns - set(INSTALLER) - set(installer.OWN_PATTERNS)
    assert not unheld, f"patterns of the installer dialogue with no recorded OpenBSD string: {sorted(unheld)}"


def test_own_prompt_cannot_be_mistaken_for_openbsd_output():
    for entry in RECORDED.values():
        text = entry.text or ""
        assert not installer.SHELL_PROMPT.search(text) and not installer.SHELL_PROMPT.search("\n" + text)


def test_iked_failure_patterns_match_what_iked_logs():
    # iked's log at its default level: each pattern finds the recorded line, as syslog and as -d print it.
    for name, (pattern, recorded) in parsers.IKED_GIVES_UP.items():
        for record_name in recorded:
            line = shown(record_name)
            assert re.search(pattern, line), f"{name} misses {record_name}: {line!r}"
            assert re.search(pattern, f"May 19 10:00:00 resp iked[4242]: {line}"), name
            assert parsers.iked_fatal_line(f"ikev2_recv: message\n{line}\n") == line


def test_iked_patterns_do_not_fire_on_ordinary_lines():
    ordinary = [
        "ikev2 exiting, pid 4242",  # proc.c proc_shutdown, on every stop
        "ca exiting, pid 4243",
        "spi=0x1a2b3c4d5e6f7081: established peer 198.51.100.1:500[FQDN/resp.example.com] local ...",
        "ikev2_recv: IKE_SA_INIT request from initiator 192.0.2.1:500 to 198.51.100.1:500",
    ]
    for line in ordinary:
        assert parsers.iked_fatal_line(line) is None, line


def test_dead_and_debug_only_patterns_are_gone():
    assert "fatal in" not in parsers.IKED_FATAL  # log.c prints "procname: message"
    assert "failed to load config file" not in parsers.IKED_FATAL  # log_debug: only with -vv


def test_openbsd_login_and_rcctl_strings_are_recorded():
    facts = get_platform("openbsd").facts.login
    assert re.search(facts.ready, "\n" + shown("getty.login"))
    assert re.search(facts.password_prompt, shown("login_passwd.prompt"))
    assert openbsd_platform.parse_iked_started(shown("rcctl.ok"))
    assert not openbsd_platform.parse_iked_started(shown("rcctl.failed"))


def test_fake_installer_prints_only_recorded_strings():
    # The fake looks every string up by name (a KeyError stops it otherwise); the names it uses exist.
    source = (DATA / "fake_installer.py").read_text()
    used = set(re.findall(r"""(?:say|ask|ask_password|ask_which)\("([\w.]+)\"""", source))
    used |= set(re.findall(r"""S\["([\w.]+)"\]""", source))
    assert used and used <= set(RECORDED), sorted(used - set(RECORDED))


def test_readme_lists_every_recorded_string():
    readme = strings.README.read_text()
    block = strings.readme_block(readme)
    assert block is not None, f"{strings.README}: the generated table's markers are missing"
    assert block == strings.readme_table(), (
        f"{strings.README} is out of date with {strings.RECORD}: run "
        "`python tests/data/openbsd/strings.py --write-readme`"
    )


# Command output from Linux tools, kept beside the OpenBSD fixtures for the shared parsers: not OpenBSD's.
LINUX_FIXTURES = {"ping_busybox.txt", "ping_iputils.txt", "ping_iputils_errors.txt", "tcpdump_linux.txt"}
OPENBSD_FIXTURES = sorted(p.name for p in DATA.glob("*.txt") if p.name not in LINUX_FIXTURES)


def unrecorded_lines(name: str, text: str) -> list[str]:
    pattern = strings.fixture_pattern(name, RECORDED)
    assert pattern is not None, f"{name}: no recorded OpenBSD output says it may print there"
    return [line for line in text.splitlines() if line.strip() and not pattern.fullmatch(line)]


@pytest.mark.parametrize("name", OPENBSD_FIXTURES)
def test_openbsd_fixtures_are_made_of_recorded_output(name):
    # Every line a row of pieces recorded from the program's source (blank lines are summary()'s and
    # ipsecctl_print_title's newlines).
    assert unrecorded_lines(name, (DATA / name).read_text()) == []


def test_a_fixture_word_no_source_prints_is_caught():
    natt = (DATA / "ikectl_show_sa_resp_natt.txt").read_text()
    assert unrecorded_lines(
        "ikectl_show_sa_resp_natt.txt", natt.replace(" udpencap", " udpecap")
    )  # 7.7's word
    wire = (DATA / "tcpdump_wire_openbsd.txt").read_text()
    assert unrecorded_lines("tcpdump_wire_openbsd.txt", wire.replace("esp spi", "ESP(spi"))  # Linux tcpdump's
    ping = (DATA / "ping_openbsd_ok.txt").read_text()
    assert unrecorded_lines("ping_openbsd_ok.txt", ping.replace("packets received", "received"))  # iputils'


def test_output_entries_name_files_that_exist():
    names = {p.name for p in DATA.glob("*.txt")}
    for entry in RECORDED.values():
        for pattern in entry.fixtures:
            assert any(entry.prints_in(n) for n in names), f"{entry.id}: no fixture matches {pattern}"
        if entry.role == "argument":
            assert entry.text is not None and entry.fixtures, entry.id
    assert LINUX_FIXTURES <= names
    assert not [e.id for e in RECORDED.values() for n in LINUX_FIXTURES if e.prints_in(n)]
