"""Boot the Linux appliance with plain QEMU (software emulation, 128 MiB) and check what the lab relies on.

Slow (a build when the cache is cold, then a 5-10 s boot): marked `scenario`. No libvirt involved.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.console import Console, Transcript
from lab.images import LinuxImage, linux_image

pytestmark = pytest.mark.scenario

BOOT = 120  # seconds from QEMU start to the ready line under TCG, with margin for a loaded host
COMMAND = 60
MEMORY_MIB = 128
READY = "ikedlab-linux ready"


@pytest.fixture(autouse=True)
def evidence() -> None:
    """Overrides the scenarios' evidence folder, which needs a libvirt lab: this module boots plain QEMU."""


@pytest.fixture(scope="module")
def image() -> LinuxImage:
    return linux_image()


@pytest.fixture(scope="module")
def guest(image: LinuxImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 is not installed")
    folder = tmp_path_factory.mktemp("boot")
    argv = [
        qemu,
        *("-accel", "tcg", "-m", str(MEMORY_MIB), "-nographic", "-no-reboot", "-nic", "none"),
        *("-kernel", str(image.kernel), "-initrd", str(image.initrd)),
        *("-append", f"{image.cmdline} ikedlab.hostname=test"),
        *("-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"),
    ]
    start = time.monotonic()
    console = Console("test", argv, transcript=Transcript(folder), raw_log=folder / "console.raw")
    try:
        console.wait_for(READY, BOOT, "the ready banner")
        console.attach()
        print(f"boot to ready: {time.monotonic() - start:.1f}s")
        yield console
    finally:
        console.close()


def test_hostname_comes_from_the_kernel_command_line(guest: Console) -> None:
    assert guest.check("hostname").output.strip() == "test"


def test_pf_key_is_loaded_at_boot_and_esp_loads(guest: Console) -> None:
    assert "af_key" in guest.check("cat /proc/modules").output
    guest.check("/sbin/modprobe esp4 && /sbin/modprobe xfrm_user")


def test_iked_accepts_a_configuration(guest: Console) -> None:
    guest.check(
        "printf 'ikev2 \"t\" active esp from 10.0.1.0/24 to 10.0.2.0/24 peer 10.0.0.2 srcid test\\n'"
        " > /tmp/x.conf && chmod 0600 /tmp/x.conf"
    )
    assert "configuration OK" in guest.check("/usr/sbin/iked -n -f /tmp/x.conf").output


def test_nftables_counts_esp_and_sees_ipsec(guest: Console) -> None:
    nft = "/usr/sbin/nft"
    guest.check(f"{nft} add table inet t")
    guest.check(f"{nft} add chain inet t c '{{ type filter hook input priority 0; }}'")
    guest.check(f"{nft} add rule inet t c meta l4proto esp counter")
    guest.check(f"{nft} add rule inet t c meta ipsec exists log group 1")
    guest.check(f"{nft} add rule inet t c rt ipsec exists counter")
    assert "meta l4proto esp counter" in guest.check(f"{nft} list ruleset").output


def test_tools_run(guest: Console) -> None:
    assert "tcpdump version" in guest.check("/usr/bin/tcpdump --version").output
    guest.check("/usr/bin/openssl ecparam -genkey -name prime256v1 -noout -out /tmp/k.pem")
    assert "legacy" in guest.check("/usr/bin/openssl list -providers -provider legacy").output
    assert "inet 127.0.0.1" in guest.check("/usr/bin/ip addr show lo").output


def test_memory_headroom(guest: Console) -> None:
    available_kib = int(guest.check("sed -n 's/^MemAvailable: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo").output)
    assert available_kib > 32 * 1024


def test_a_daemon_started_with_setsid_leaves_the_shell_alone(guest: Console) -> None:
    shell = guest.check("echo $$").output
    guest.check("setsid /bin/sleep 1000 & true")
    assert guest.check("echo $$").output == shell


def test_exit_gives_a_new_shell_not_a_panic(guest: Console) -> None:
    guest.send_line("exit")
    guest.wait_for(READY, COMMAND, "a new shell after exit")
    guest.attach()
    assert guest.check("echo alive").output == "alive\n"
    assert guest.check("cat /proc/1/cmdline | tr '\\0' ' '").output.startswith("/bin/sh /init")


def cpio_names(archive: bytes) -> list[str]:
    names, offset = [], 0
    while archive[offset : offset + 6] == b"070701":
        filesize, namesize = (int(archive[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in (6, 11))
        names.append(archive[offset + 110 : offset + 109 + namesize].decode())
        offset += 110 + namesize + (-(110 + namesize) % 4)
        offset += filesize + (-filesize % 4)
    return names


def test_no_keys_in_the_image(image: LinuxImage) -> None:
    names = cpio_names(gzip.decompress(Path(image.initrd).read_bytes()))
    assert "init" in names and names[-1] == "TRAILER!!!"
    assert [n for n in names if n.startswith("etc/iked/private/") or n == "etc/iked/local.pub"] == []
