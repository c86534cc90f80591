"""What QEMU opens by name, reached as libvirt's unprivileged QEMU user: boot files linked into QEMU_DIR
that user may read and never write, overlays it may write, and nothing else of ikedlab's."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import qemu_files
from lab.errors import HypervisorError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="QEMU runs as a user of its own only under root")
NOBODY, NOGROUP = 65534, 65534  # stands in for libvirt-qemu: a user and group with no other rights


@pytest.fixture
def qemu_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """In a folder others may pass through, as /var/lib is (pytest's own base is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="ikedlab-qemu-test-", dir="/tmp"))
    base.chmod(0o755)
    monkeypatch.setenv("IKEDLAB_QEMU_DIR", str(base / "qemu"))
    monkeypatch.setenv("IKEDLAB_LIBVIRT_URI", "qemu:///system")
    yield base / "qemu"
    shutil.rmtree(base)


def as_qemu(*argv: str) -> subprocess.CompletedProcess:
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOGROUP}", "--clear-groups", *argv]
    return subprocess.run(command, capture_output=True, text=True)


def test_libvirts_qemu_user_from_its_dac_label_and_never_root():
    assert qemu_files.from_baselabel("+999:+994") == qemu_files.QemuUser(999, 994)
    with pytest.raises(HypervisorError, match="libvirt is set to run QEMU as root"):
        qemu_files.from_baselabel("+0:+0")
    with pytest.raises(HypervisorError, match="libvirt names no unprivileged QEMU user"):
        qemu_files.from_baselabel(None)


def test_a_boot_file_in_a_private_cache_is_readable_by_qemu_through_a_link_and_never_writable(
    qemu_dir: Path, tmp_path: Path
):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    kernel = cache / "vmlinuz"
    kernel.write_bytes(b"kernel")
    assert as_qemu("cat", str(kernel)).returncode != 0  # the cache is ours alone
    user = qemu_files.QemuUser(NOBODY, NOGROUP)
    reached = qemu_files.reachable(kernel, user)
    assert reached.is_relative_to(qemu_dir) and os.path.samefile(reached, kernel)  # a link: no copy
    assert as_qemu("cat", str(reached)).stdout == "kernel"
    assert as_qemu("sh", "-c", f"echo x >> {reached}").returncode != 0
    assert qemu_files.reachable(kernel, user) == reached  # the same link next time

    kernel.unlink()
    kernel.write_bytes(b"rebuilt")  # a new image: a new file, a new link, the old one dropped
    again = qemu_files.reachable(kernel, user)
    assert again != reached and not reached.exists() and as_qemu("cat", str(again)).stdout == "rebuilt"


def test_an_overlay_is_writable_by_qemu_and_goes_with_its_lab(qemu_dir: Path, tmp_path: Path):
    user = qemu_files.QemuUser(NOBODY, NOGROUP)
    overlay = qemu_files.overlay("t1", tmp_path / "run", "init")
    assert overlay == qemu_dir / "disks" / "t1" / "init.qcow2"
    qemu_files.ready_overlay_folder(overlay, user)
    overlay.write_bytes(b"qcow2")
    qemu_files.reachable(overlay, user, writable=True)
    assert as_qemu("sh", "-c", f"echo more >> {overlay}").returncode == 0
    qemu_files.remove_lab("t1")
    assert not (qemu_dir / "disks" / "t1").exists()


def test_a_qemu_dir_others_can_write_is_refused(qemu_dir: Path, tmp_path: Path):
    qemu_dir.mkdir()
    qemu_dir.chmod(0o777)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(HypervisorError, match="is not root's alone"):
        qemu_files.reachable(tmp_path / "f", qemu_files.QemuUser(NOBODY, NOGROUP))


def test_a_capture_is_written_by_qemu_in_its_folder_then_becomes_ikedlabs_alone(
    qemu_dir: Path, tmp_path: Path
):
    user = qemu_files.QemuUser(NOBODY, NOGROUP)
    live = qemu_files.capture_file("t1", "wan1.pcap", user)
    assert as_qemu("sh", "-c", f"printf pcap > {live}").returncode == 0  # QEMU opens it O_TRUNC|O_WRONLY
    pcap = tmp_path / "captures" / "wan1.pcap"
    pcap.parent.mkdir()
    qemu_files.take_capture(live, pcap)
    assert pcap.read_bytes() == b"pcap" and not live.exists()
    assert pcap.stat().st_uid == os.geteuid() and pcap.stat().st_mode & 0o777 == 0o600
