"""The guide's OpenBSD commands in the Linux appliance (images/linux/rootfs/usr/local/sbin): their
parts that run without a guest, held to the lab's own readings so the two can never tell a learner different
things."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.images.recipe import RECIPE_DIR
from lab.platforms import get_platform, linux
from lab.platforms.linux import parse_linux_counters
from lab.platforms.parsers import parse_ipsecctl_sa, parse_netstat_esp_ah

ROOTFS = RECIPE_DIR / "rootfs"
TOOLS = ROOTFS / "usr" / "local" / "sbin"
SHARE = ROOTFS / "usr" / "local" / "share" / "ikedlab"
DATA = Path(__file__).parent / "data" / "linux"
BUSYBOX = shutil.which("busybox")

# The guest runs busybox's awk; the host's awk checks the same programs are plain POSIX awk.
AWKS = [["awk"]] + ([[BUSYBOX, "awk"]] if BUSYBOX else [])


def awk(command: list[str], program: str, text: str) -> str:
    done = subprocess.run([*command, "-f", str(SHARE / program)], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in TOOLS.iterdir()))
def test_scripts_are_executable_posix_sh(script: str) -> None:
    path = TOOLS / script
    assert path.stat().st_mode & 0o111, f"{path} must be executable (the image keeps the mode)"
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("command", AWKS, ids=lambda c: c[0].rsplit("/", 1)[-1])
@pytest.mark.parametrize("fixture", ["counters-init-before.txt", "counters-init-after.txt"])
def test_netstat_counts_what_the_lab_counts(command: list[str], fixture: str) -> None:
    text = (DATA / fixture).read_text()
    numbers = [int(n) for n in awk(command, "ipsec-counters.awk", text).split()]
    want = parse_linux_counters(text)
    assert numbers == [
        want.esp_in,
        want.esp_out,
        want.ah_in,
        want.ah_out,
        want.esp_in_bytes,
        want.esp_out_bytes,
    ]


def netstat_shape(esp_in: int, esp_out: int, ah_in: int, ah_out: int, b_in: int, b_out: int) -> str:
    """What the guest's netstat prints for these numbers (its printf lines, run here by sh)."""
    script = (TOOLS / "netstat").read_text()
    body = script[script.index("plural()") :]
    done = subprocess.run(
        ["sh", "-c", f"set -- {esp_in} {esp_out} {ah_in} {ah_out} {b_in} {b_out}; proto='esp ah'\n{body}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_netstat_prints_openbsds_shape() -> None:
    printed = netstat_shape(12, 1, 0, 0, 1392, 1776)
    assert "\t12 input ESP packets\n\t1 output ESP packet\n" in printed
    counters = parse_netstat_esp_ah(printed)
    assert (counters.esp_in, counters.esp_out, counters.ah_in, counters.ah_out) == (12, 1, 0, 0)
    assert (counters.esp_in_bytes, counters.esp_out_bytes) == (1392, 1776)


@pytest.mark.parametrize("command", AWKS, ids=lambda c: c[0].rsplit("/", 1)[-1])
def test_ipsecctl_flows_and_sad_from_xfrm(command: list[str]) -> None:
    flows = awk(command, "ipsecctl-flows.awk", (DATA / "ip-xfrm-policy-init.txt").read_text())
    sad = awk(command, "ipsecctl-sad.awk", (DATA / "ip-xfrm-state-init.txt").read_text())
    assert "flow esp out from 10.0.1.0/24 to 10.0.2.0/24 peer 198.51.100.1 type require" in flows
    assert "flow esp in from 10.0.2.0/24 to 10.0.1.0/24 peer 198.51.100.1 type use" in flows
    assert "fwd" not in flows and "/32" not in flows
    assert re.search(
        r"^esp tunnel from 192\.0\.2\.1 to 198\.51\.100\.1 spi 0x[0-9a-f]{8} auth hmac-sha2-\d+ enc aes-256$",
        sad,
        re.M,
    )
    assert "0x" not in sad.replace(" spi 0x", ""), "no key may be printed"
    state = parse_ipsecctl_sa(flows + "\n" + sad, local_addresses=["192.0.2.1", "10.0.1.1"])
    assert {(f.direction, str(f.src), str(f.dst)) for f in state.flows} >= {
        ("out", "10.0.1.0/24", "10.0.2.0/24"),
        ("in", "10.0.2.0/24", "10.0.1.0/24"),
        ("out", "10.0.1.0/24", "198.51.100.1/32"),
    }
    assert sorted(c.direction for c in state.child_sas) == ["in", "out"]


@pytest.mark.parametrize("command", AWKS, ids=lambda c: c[0].rsplit("/", 1)[-1])
def test_ipsecctl_says_no_flows_and_no_entries(command: list[str]) -> None:
    assert awk(command, "ipsecctl-flows.awk", "") == "FLOWS:\nNo flows\n"
    assert awk(command, "ipsecctl-sad.awk", "") == "SAD:\nNo entries\n"


def test_constants_shared_with_the_platform() -> None:
    assert f"NFLOG=nflog:{linux.NFLOG_GROUP}\n" in (TOOLS / "tcpdump").read_text()
    assert f"IKED_LOG={linux.IKED_LOG}\n" in (TOOLS / "rcctl").read_text()
    assert linux.RCCTL == "/" + (TOOLS / "rcctl").relative_to(ROOTFS).as_posix()
    gateway = dict(get_platform("linux").facts.banner["gateway"])
    assert f"tcpdump -n -i nflog:{linux.NFLOG_GROUP}" in gateway


def test_the_guide_commands_come_from_path_alone() -> None:
    """One mechanism: PATH (the stand-ins first), no shell functions that only an interactive shell has."""
    shrc = ROOTFS / "etc" / "ikedlab" / "shrc"
    done = subprocess.run(
        ["sh", "-c", f". {shrc} >/dev/null 2>&1; type ip netstat sysctl"], capture_output=True, text=True
    )
    assert "function" not in done.stdout + done.stderr, done.stdout
    init = (RECIPE_DIR / "init").read_text()
    assert "PATH=/usr/local/sbin:" in init


@pytest.mark.skipif(not BUSYBOX, reason="busybox is not installed on this host")
def test_rcctl_keeps_ikeds_flags_as_openbsd_does(tmp_path: Path) -> None:
    rc_conf = tmp_path / "rc.conf.local"
    rc_conf.write_text("pf=NO\niked_flags=-6\n")
    env = {"RC_CONF": str(rc_conf), "PATH": "/usr/bin:/bin"}

    def rcctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BUSYBOX, "sh", str(TOOLS / "rcctl"), *args], capture_output=True, text=True, env=env
        )

    assert rcctl("set", "iked", "flags", "-p", "9999").returncode == 0
    assert rc_conf.read_text() == "pf=NO\niked_flags=-p 9999\n"  # one line, replaced; others kept
    assert rcctl("get", "iked", "flags").stdout == "-p 9999\n"
    assert rcctl("set", "iked", "flags").returncode == 0 and rcctl("get", "iked", "flags").stdout == ""
    assert "iked_flags" not in rc_conf.read_text()
    assert rcctl("set", "iked", "colour", "blue").returncode == 1  # usage
    assert linux.Linux().iked_flags_command("-p 9999") == f"{linux.RCCTL} set iked flags -p 9999"
