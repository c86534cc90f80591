"""Files for a libvirt host that does not share the caller's files (IKEDLAB_LIBVIRT_URI=qemu+ssh://host/...):
storage volumes in ikedlab's own pool on that host, moved over libvirt's own connection.

A boot file (kernel, initrd, golden disk) becomes a volume named by its content (`<sha256>-<name>`), uploaded
once through a libvirt stream and reused by every lab after it, whoever asks; an upload goes to a `.partial`
volume first and is cloned to its final name only whole, so a broken connection never leaves a volume that
looks complete. A guest's disk overlay is a qcow2 volume on its golden disk's volume, named after the lab.
Files a guest writes on that host (a capture) are read back the same way (`download`). The domain's XML then
names only paths inside the pool: libvirt on that host never opens a file of the caller's.

The pool is a directory pool named `ikedlab` at POOL_PATH on that host, made by ikedlab when missing; a pool
of that name at another path is someone else's, and is refused rather than used.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.errors import HypervisorError

POOL = "ikedlab"
POOL_PATH = "/var/lib/libvirt/images/ikedlab"
CHUNK = 1 << 20
#: A volume name: the pool's own files, nothing that walks out of its folder.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def overlay_volume(lab: str, host: str) -> str:
    """A guest's disk overlay on a remote libvirt host; with no host, the prefix of every volume of the lab
    (a '.' is in no lab name: lab 'a' never takes lab 'a-b's)."""
    return f"{lab}.{host}.qcow2" if host else f"{lab}."


def on_libvirt_host(spec: Any, volumes: Volumes, user: Any) -> Any:
    """`spec` (a DomainSpec of lab.hypervisor, which imports this module) as a remote libvirt host runs it:
    boot files as volumes of their content (uploaded once, readable), the disk an overlay volume named after
    the lab and host that only QEMU's `user` there (lab.qemu_files.QemuUser, from that host's DAC label)
    writes, QEMU run as that user, no serial log by name. Every path in its XML is one of ikedlab's pool."""
    files = {
        part: Path(volumes.upload(path))
        for part in ("kernel", "initrd", "backing")
        if (path := getattr(spec, part)) is not None
    }
    disk = None
    if spec.disk is not None:
        if "backing" not in files:
            raise HypervisorError(f"{spec.host}: a disk with no golden image under it stays local")
        disk = Path(volumes.overlay(overlay_volume(spec.lab, spec.host), str(files["backing"]), user))
    return replace(
        spec,
        uid=user.uid,
        gid=user.gid,
        kernel=files.get("kernel"),
        initrd=files.get("initrd"),
        backing=files.get("backing"),
        disk=disk,
        serial_logs=False,
    )


def content_name(path: Path) -> str:
    """The volume a boot file becomes: its SHA-256 and its file name."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return f"{digest.hexdigest()[:32]}-{path.name}"


class Volumes:
    """ikedlab's pool on the libvirt host of `conn` (a libvirt.virConnect); `libvirt` is the module."""

    def __init__(self, conn: Any, libvirt: Any) -> None:
        self.conn = conn
        self.libvirt = libvirt
        self._pool: Any = None

    def _error(self, what: str, e: Exception) -> HypervisorError:
        message = e.get_error_message() if hasattr(e, "get_error_message") else str(e)
        return HypervisorError(f"libvirt host {self.conn.getHostname()}: {what}: {message}")

    @property
    def pool(self) -> Any:
        """The pool, made (defined, built, started) on first use when the host has none."""
        if self._pool is not None:
            return self._pool
        libvirt = self.libvirt
        try:
            pool = self.conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            xml = (
                f"<pool type='dir'><name>{POOL}</name><target><path>{POOL_PATH}</path>"
                "<permissions><mode>0755</mode></permissions></target></pool>"
            )
            try:
                pool = self.conn.storagePoolDefineXML(xml, 0)
                pool.build(0)
                pool.setAutostart(1)
            except libvirt.libvirtError as e:
                raise self._error(f"cannot make storage pool '{POOL}' at {POOL_PATH}", e) from None
        path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if path != POOL_PATH:
            raise HypervisorError(
                f"libvirt host {self.conn.getHostname()}: storage pool '{POOL}' is at {path}, not "
                f"{POOL_PATH}: not ikedlab's, left alone",
                "rename that pool, or run ikedlab against another libvirt host",
            )
        try:
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
        except libvirt.libvirtError as e:
            raise self._error(f"cannot start storage pool '{POOL}'", e) from None
        self._pool = pool
        return pool

    def _lookup(self, name: str) -> Any | None:
        try:
            return self.pool.storageVolLookupByName(name)
        except self.libvirt.libvirtError:
            return None

    def upload(self, path: Path) -> str:
        """The path on the libvirt host of `path`'s content, uploaded unless a volume of it is there."""
        name = content_name(path)
        size = path.stat().st_size
        found = self._lookup(name)
        if found is not None and found.info()[1] == size:
            return str(found.path())
        partial = self._create(f"{name}.partial", size, "raw")
        try:
            self._send(partial, path, size)
            if found is not None:
                found.delete(0)
            clone = ET.tostring(self._volume_xml(name, size, "raw"), encoding="unicode")
            final = self.pool.createXMLFrom(clone, partial, 0)
        except self.libvirt.libvirtError as e:
            raise self._error(f"cannot upload {path.name}", e) from None
        finally:
            _delete(partial)
        return str(final.path())

    def overlay(self, name: str, backing: str, user: Any) -> str:
        """A fresh qcow2 volume `name` over the volume at `backing` (a golden disk's): a guest's own disk,
        QEMU's `user`'s alone (0600)."""
        xml = self._volume_xml(name, self._capacity(backing), "qcow2")
        _owned_by(xml, user.uid, user.gid)
        store = ET.SubElement(xml, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="qcow2")
        return str(self._fresh(xml, f"the disk overlay {name}").path())

    def writable(self, name: str, uid: int, gid: int) -> str:
        """An empty volume `name` that QEMU (`uid`:`gid` on that host) may write: a file it fills there, read
        back with `download`. (QEMU creates no file in the pool's folder: it opens this one.)"""
        xml = self._volume_xml(name, 0, "raw")
        _owned_by(xml, uid, gid)
        return str(self._fresh(xml, f"volume {name}").path())

    def size(self, name: str) -> int:
        """Volume `name`'s size now (0 when it is not there): libvirt reads the file again for it."""
        volume = self._lookup(name)
        try:
            return int(volume.info()[1]) if volume is not None else 0
        except self.libvirt.libvirtError:
            return 0

    def path(self, name: str) -> str:
        """Where volume `name` is (or would be) on the libvirt host: for a file QEMU writes there."""
        _check(name)
        return f"{POOL_PATH}/{name}"

    def download(self, name: str, dest: Path) -> Path:
        """Volume `name`'s content (a file written on the libvirt host, found by a refresh) into `dest`."""
        self.pool.refresh(0)
        volume = self._lookup(name)
        if volume is None:
            raise HypervisorError(f"libvirt host {self.conn.getHostname()}: no {name} in pool '{POOL}'")
        size = volume.info()[1]
        stream = self.conn.newStream(0)
        try:
            volume.download(stream, 0, size, 0)
            with dest.open("wb") as out:
                stream.recvAll(lambda _s, data, f: f.write(data), out)
            stream.finish()
        except self.libvirt.libvirtError as e:
            stream.abort()
            raise self._error(f"cannot read {name}", e) from None
        return dest

    def remove(self, prefix: str) -> list[str]:
        """Delete the volumes whose names start with `prefix` (one lab's overlays and files)."""
        removed = []
        self.pool.refresh(0)
        for volume in self.pool.listAllVolumes(0):
            if volume.name().startswith(prefix):
                _delete(volume)
                removed.append(volume.name())
        return removed

    # --- helpers -------------------------------------------------------------------------------------------
    def _volume_xml(self, name: str, size: int, fmt: str) -> ET.Element:
        _check(name)
        volume = ET.Element("volume")
        ET.SubElement(volume, "name").text = name
        ET.SubElement(volume, "capacity", unit="bytes").text = str(size)
        target = ET.SubElement(volume, "target")
        ET.SubElement(target, "format", type=fmt)
        # Readable by QEMU's user: images carry no secret (golden images hold no per-host keys).
        ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0644"
        return volume

    def _create(self, name: str, size: int, fmt: str) -> Any:
        return self._fresh(self._volume_xml(name, size, fmt), f"volume {name}")

    def _fresh(self, xml: ET.Element, what: str) -> Any:
        """A new volume as `xml` describes it, one of its name there before deleted first."""
        old = self._lookup(xml.findtext("name") or "")
        if old is not None:
            _delete(old)
        try:
            return self.pool.createXML(ET.tostring(xml, encoding="unicode"), 0)
        except self.libvirt.libvirtError as e:
            raise self._error(f"cannot make {what}", e) from None

    def _send(self, volume: Any, path: Path, size: int) -> None:
        stream = self.conn.newStream(0)
        try:
            volume.upload(stream, 0, size, 0)
            with path.open("rb") as f:
                stream.sendAll(lambda _s, n, f: f.read(n), f)
            stream.finish()
        except BaseException:
            stream.abort()
            raise

    def _capacity(self, path: str) -> int:
        try:
            return int(self.conn.storageVolLookupByPath(path).info()[1])
        except self.libvirt.libvirtError as e:
            raise self._error(f"no volume at {path}", e) from None


def _owned_by(volume: ET.Element, uid: int, gid: int) -> None:
    """A volume's XML made QEMU's (`uid`:`gid` on that host) alone: 0600."""
    permissions = volume.find("target/permissions")
    assert permissions is not None
    permissions.find("mode").text = "0600"  # type: ignore[union-attr]
    ET.SubElement(permissions, "owner").text = str(uid)
    ET.SubElement(permissions, "group").text = str(gid)


def _check(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise HypervisorError(f"'{name}': not a volume name ikedlab makes")


def _delete(volume: Any) -> None:
    try:
        volume.delete(0)
    except Exception:  # noqa: BLE001 - already gone: nothing to delete
        pass
