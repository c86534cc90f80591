"""Platforms as data: each registered platform's data file states every fact and every capability."""

from pathlib import Path

import pytest

from lab.errors import PlatformError
from lab.platforms import CAPABILITIES, get_platform, load_facts, platform_names

PLATFORMS = platform_names()


def test_every_platform_module_has_its_data_file_and_nothing_else_registers():
    assert set(PLATFORMS) == {p.stem for p in Path("lab/platforms").glob("*.yaml")}


@pytest.mark.parametrize("name", PLATFORMS)
def test_every_capability_is_stated_with_a_reason_when_missing(name):
    platform = get_platform(name)
    for capability in CAPABILITIES:
        if platform.can(capability):
            assert platform.why_not(capability) == ""
        else:
            assert (
                platform.why_not(capability).startswith(f"{name}: ")
                and len(platform.why_not(capability)) > 20
            )


def test_an_unknown_capability_is_a_programming_error():
    with pytest.raises(KeyError, match="unknown capability 'teleport'"):
        get_platform(PLATFORMS[0]).can("teleport")


def test_linux_lacks_liveness_probes_for_the_pf_key_reason():
    linux = get_platform("linux")
    assert not linux.can("liveness_probes") and "PF_KEY" in linux.why_not("liveness_probes")
    assert get_platform("openbsd").can("liveness_probes")


def test_leading_nics_shift_interface_names_without_touching_the_registered_platform():
    openbsd = get_platform("openbsd")
    assert openbsd.with_leading_nics(1).interface_name(0) == "vio1"
    assert openbsd.interface_name(0) == get_platform("openbsd").interface_name(0) == "vio0"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


GOOD = """\
name: x
description: a test platform
interfaces: {prefix: em, offset: 0}
memory_mib: 64
boot: kernel
base64_decode: base64 -d
login: {ready: 'ready'}
capabilities: [liveness_probes, esp_aes_gcm, esp_hmac_sha2_256, enc0, decapsulated_capture, pf, masquerade,
  link_impairment]
lacks:
  syslog: no syslog here
"""


def test_a_good_data_file_loads(tmp_path):
    facts = load_facts(_write(tmp_path, GOOD))
    assert (facts.interface_prefix, facts.memory_mib, facts.boot, facts.login.user) == (
        "em",
        64,
        "kernel",
        None,
    )
    assert facts.lacks == {"syslog": "no syslog here"}


@pytest.mark.parametrize(
    "change, message",
    [
        (("memory_mib: 64", "memory_mib: lots"), r"x.yaml: memory_mib: expected a int"),
        (("boot: kernel", "boot: floppy"), r"x.yaml: boot: expected kernel or disk"),
        (("  syslog: no syslog here", ""), r"not stated: syslog"),
        (("link_impairment]", "link_impairment, syslog]"), r"in both: syslog"),
        (("link_impairment]", "link_impairment, teleport]"), r"'teleport' is not a known capability"),
        (("{prefix: em, offset: 0}", "{prefix: em}"), r"interfaces.offset: expected a int"),
    ],
)
def test_a_bad_data_file_is_one_line_naming_file_and_field(tmp_path, change, message):
    with pytest.raises(PlatformError, match=message):
        load_facts(_write(tmp_path, GOOD.replace(*change)))
