"""The files QEMU opens by name, where QEMU can open them.

Run as root, ikedlab has libvirt start QEMU as libvirt's unprivileged QEMU user (Debian: libvirt-qemu, the
DAC base label libvirt reports), never as root: a guest that breaks out of QEMU is that user. That user
cannot enter ikedlab's state and cache folders (0700, under /root), so what QEMU opens by name is reached
through one folder of its own, QEMU_DIR (/var/lib/ikedlab unless IKEDLAB_QEMU_DIR says otherwise; root and
QEMU's group, 0750): the kernel, the initrd and a golden disk as hard links there (QEMU's group may read
them, never write them), each guest's disk overlay (QEMU's group may write it) under `disks/LAB/`, and
a capture while QEMU dumps a link into it, under `captures/LAB/` (then moved into ikedlab's own folder,
0600: QEMU's net/dump.c opens its file with open(2), so a descriptor passed over QMP is no use). Everything
else QEMU gets already open: saved memory from libvirt, serial logs through virtlogd. Nothing is relabelled:
libvirt changes no file's owner.

Run as another user, QEMU runs as that user and opens their files where they are; nothing here applies.
On a remote libvirt host QEMU runs as that host's QEMU user too (`labelled`), its files volumes of ikedlab's
pool there (lab/volumes.py).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import private, settings
from lab.command import run
from lab.errors import HypervisorError
from lab.libvirt_hosts import is_remote

SOURCE = ".source"  # beside a boot file: "DEV INODE SIZE MTIME PATH" of the file it was linked or copied from


@dataclass(frozen=True)
class QemuUser:
    """Who QEMU runs as: the caller, or libvirt's QEMU user when the caller is root."""

    uid: int
    gid: int

    @property
    def apart(self) -> bool:
        """QEMU is another user than ikedlab: it reaches files only through QEMU_DIR."""
        return self.uid != os.geteuid()


def separate(uri: str | None = None) -> bool:
    """Whether QEMU runs as a user of its own: ikedlab as root on libvirt's system instance (`uri`, else
    IKEDLAB_LIBVIRT_URI)."""
    uri = uri or settings.libvirt_uri()
    # A remote libvirt host's files are volumes of its own pool (lab/volumes.py), not these.
    return (
        os.geteuid() == 0 and uri.startswith("qemu") and not uri.endswith("/session") and not is_remote(uri)
    )


def labelled(uri: str | None = None) -> bool:
    """Whether QEMU runs as libvirt's own QEMU user (its DAC base label), never as the caller: on the local
    system instance when ikedlab is root (`separate`), and always on a remote host's system instance, whose
    libvirtd runs as root there whoever calls it (the caller's uid here means nothing there: as root it was
    root's QEMU)."""
    uri = uri or settings.libvirt_uri()
    system = uri.startswith("qemu") and not uri.split("?")[0].endswith("/session")
    return separate(uri) or (system and is_remote(uri))


def from_capabilities(caps: str, accel: str, uri: str | None = None) -> QemuUser:
    """The QEMU user from libvirt's capabilities XML: the DAC base label for domains of type `accel`."""
    label = None
    for model in ET.fromstring(caps).iter("secmodel") if caps else ():
        if (
            model.findtext("model") == "dac"
            and (found := model.find(f"baselabel[@type='{accel}']")) is not None
        ):
            label = found.text
    return from_baselabel(label, uri)


def from_baselabel(label: str | None, uri: str | None = None) -> QemuUser:
    """The QEMU user from libvirt's DAC base label (`+999:+994`); the caller when ikedlab is not root and
    libvirt is this machine's."""
    if not labelled(uri):
        return QemuUser(os.getuid(), os.getgid())
    try:
        uid, gid = (int(part.lstrip("+")) for part in (label or "").split(":"))
    except ValueError:
        raise HypervisorError(
            f"libvirt names no unprivileged QEMU user (DAC label {label!r}): ikedlab runs no QEMU as root",
            "scripts/setup-host.sh installs libvirt with its libvirt-qemu user",
        ) from None
    if uid == 0:
        raise HypervisorError(
            "libvirt is set to run QEMU as root (qemu.conf user): ikedlab runs no QEMU as root",
            "leave qemu.conf's user at libvirt's default (libvirt-qemu on Debian)",
        )
    return QemuUser(uid, gid)


def for_qemu(spec: Any, user: QemuUser) -> Any:
    """`spec` (a DomainSpec of lab.hypervisor, which imports this module) as QEMU `user` runs it: its
    label, boot files it can read, its own disk overlay made (on the golden image as QEMU reaches it; the
    golden image is never written)."""
    files = {
        part: reachable(path, user)
        for part in ("kernel", "initrd", "backing")
        if (path := getattr(spec, part)) is not None
    }
    if spec.disk and spec.backing:
        ready_overlay_folder(spec.disk, user)
        overlay: list[str | Path] = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
        run([*overlay, "-b", files["backing"], spec.disk])
        reachable(spec.disk, user, writable=True)
    return dataclasses.replace(
        spec,
        uid=user.uid,
        gid=user.gid,
        kernel=files.get("kernel"),
        initrd=files.get("initrd"),
        backing=files.get("backing"),
    )


def overlay(lab: str, run_dir: Path, host: str) -> Path:
    """Where guest `host`'s disk overlay lives: in QEMU_DIR when QEMU is a user of its own."""
    if separate():
        return settings.qemu_dir() / "disks" / lab / f"{host}.qcow2"
    return run_dir / "disks" / f"{host}.qcow2"


def remove_lab(lab: str) -> None:
    """A lab's overlays (and any capture QEMU left) in QEMU_DIR: gone with the lab."""
    for kind in ("disks", "captures"):
        shutil.rmtree(settings.qemu_dir() / kind / lab, ignore_errors=True)


def reachable(path: Path, user: QemuUser, writable: bool = False) -> Path:
    """`path` as QEMU `user` can open it: itself when QEMU is the caller; else a hard link in QEMU_DIR
    (a copy when the file is on another file system) that QEMU's group may read, or an overlay already
    there made group-writable."""
    if not user.apart:
        return path
    base = _qemu_dir(user)
    if path.is_relative_to(base):  # an overlay, made there
        _share(path, user, 0o660 if writable else 0o640)
        return path
    st = path.stat()
    # One folder per source file (device and inode): a rebuilt image is a new inode, hence a new link. A
    # copy (another file system) is checked against the source's size and time: its inode may be reused.
    folder = base / "boot" / f"{st.st_dev:x}-{st.st_ino:x}"
    target = folder / path.name
    stamp = f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {path}\n"
    if target.exists() and _read(folder / SOURCE) != stamp:
        shutil.rmtree(folder)
    if not target.exists():
        _made(folder, user)
        (folder / SOURCE).write_text(stamp)
        partial = folder / f".{path.name}.{os.getpid()}.partial"
        try:
            os.link(path, partial)
        except OSError:
            shutil.copyfile(path, partial)  # another file system
        os.replace(partial, target)
    _share(target, user, 0o640)
    _prune(base / "boot", keep=folder)
    return target


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def capture_file(lab: str, name: str, user: QemuUser) -> Path:
    """An empty file QEMU `user` may write a capture into (QEMU opens a dump's file itself, by name)."""
    folder = _qemu_dir(user) / "captures" / lab
    _made(folder, user)
    path = folder / name
    path.unlink(missing_ok=True)
    private.write_bytes(path, b"")
    _share(path, user, 0o660)
    return path


def take_capture(live: Path, pcap: Path) -> None:
    """A finished capture from QEMU_DIR into ikedlab's own folder, ikedlab's alone (0600)."""
    if not live.exists():
        return
    os.chown(live, os.geteuid(), os.getegid())
    live.chmod(0o600)
    try:
        os.replace(live, pcap)
    except OSError:  # another file system
        shutil.copyfile(live, pcap)
        live.unlink()


def ready_overlay_folder(path: Path, user: QemuUser) -> None:
    """The folder an overlay is about to be made in."""
    if user.apart:
        _made(path.parent, user)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)


def _qemu_dir(user: QemuUser) -> Path:
    base = settings.qemu_dir()
    if not base.exists():
        _made(base, user)
    st = base.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise HypervisorError(
            f"{base} (QEMU's files) is not root's alone (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}): ikedlab puts what QEMU boots there and refuses it",
            "remove it (ikedlab makes it again), or point IKEDLAB_QEMU_DIR at a folder of root's",
        )
    return base


def _made(folder: Path, user: QemuUser) -> None:
    """`folder` and those above it up to QEMU_DIR: ours, QEMU's group may enter (0750)."""
    base = settings.qemu_dir()
    for step in [*reversed(folder.relative_to(base).parents), folder.relative_to(base)]:
        path = base / step
        path.mkdir(exist_ok=True, mode=0o750)
        os.chown(path, os.geteuid(), user.gid)
        path.chmod(0o750)


def _share(path: Path, user: QemuUser, mode: int) -> None:
    os.chown(path, os.geteuid(), user.gid)
    path.chmod(mode)


def _prune(boot: Path, keep: Path) -> None:
    """Boot files whose source is gone or was replaced (a rebuilt image) are dropped."""
    for folder in boot.iterdir():
        if folder == keep or not (folder / SOURCE).is_file():
            continue
        dev, ino, size, mtime, source = _read(folder / SOURCE).rstrip("\n").split(" ", 4)
        try:
            st = os.stat(source)
            if [str(v) for v in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] == [
                dev,
                ino,
                size,
                mtime,
            ]:
                continue
        except OSError:
            pass
        shutil.rmtree(folder, ignore_errors=True)
