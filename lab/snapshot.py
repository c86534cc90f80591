"""Warm labs: a provisioned lab saved once, as one consistent cut, and restored in seconds.

A snapshot is the memory of every guest of one lab, saved while all of them are paused (so no guest runs
ahead of another: IKE and ESP state agree on both gateways), plus each OpenBSD guest's disk overlay, since a
saved image holds RAM only. It lives under the user's state directory, files 0600 (the gateways' private
keys are in guest memory), never in artifacts.

One snapshot per lab name, and the name is one of its inputs: domain names, UDP ports and MAC addresses
derive from the lab's name and are baked into the saved QEMU state and the guests' neighbour caches, so a
snapshot can only come back as the lab it was taken from. A new snapshot of a lab replaces the old one, so
disk use stays one lab's memory per lab.

A snapshot is used only when its key, a digest of every input, matches exactly; `Inputs` names each input so
a stale snapshot can say which one changed.

Each file's SHA-256 is recorded at save and checked before libvirt restores it (`checked`): a save file
carries the domain XML libvirt restores as root, so an edited one could start QEMU with any command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lab import private
from lab.errors import SnapshotError
from lab.ownership import CHECKOUT

FORMAT = 1
META = "snapshot.json"
#: Modules whose code does not shape what a guest holds: changing them keeps snapshots valid.
_NOT_GUEST_STATE = {
    "cli.py",
    "cli_store.py",
    "bench.py",
    "vagrant.py",
    "progress.py",
    "prune.py",
    "pytest_plugin.py",
    "__main__.py",
    "keeper.py",
}
#: Folders of such modules: images have manifests of their own; exercises break and judge a provisioned lab,
#: they never make one (an edit to an exercise would otherwise turn every next `up` into a cold boot).
_NOT_GUEST_STATE_DIRS = {"images", "exercises"}


def snapshots_root() -> Path:
    return private.state_dir() / "snapshots"


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def file_sha256(f: BinaryIO) -> str:
    """SHA-256 of an open file, read in 4 MiB pieces (hashlib lets other threads run meanwhile: 0.12 s for
    128 MiB measured here, so the five files of a lab checked in parallel cost ~0.25 s on 2 cores)."""
    h = hashlib.sha256()
    while chunk := f.read(4 << 20):
        h.update(chunk)
    return h.hexdigest()


def file_identity(paths: list[Path]) -> str:
    """Files by path, size and modification time: cheap, and a rebuilt image is a new file."""
    parts = []
    for path in paths:
        st = path.stat()
        parts.append(f"{path} {st.st_size} {st.st_mtime_ns}")
    return digest("\n".join(parts))


def code_version() -> str:
    """A digest of the provisioning code and its templates: a change there may change what a lab holds."""
    lab_dir = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(lab_dir.rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".j2", ".yaml") or path.name in _NOT_GUEST_STATE:
            continue
        if _NOT_GUEST_STATE_DIRS & set(path.relative_to(lab_dir).parts):
            continue
        h.update(str(path.relative_to(lab_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Inputs:
    """Every input of a provisioned lab, by name: `key` is the digest of all of them."""

    values: dict[str, str]
    summary: dict[str, str] = field(default_factory=dict)  # for people (`snapshot list`); not in the key

    @property
    def key(self) -> str:
        return digest(json.dumps({"format": FORMAT, **self.values}, sort_keys=True))

    def changed(self, other: dict[str, str]) -> list[str]:
        names = sorted(set(self.values) | set(other))
        return [n for n in names if self.values.get(n) != other.get(n)]


@dataclass(frozen=True)
class Snapshot:
    lab: str
    directory: Path
    key: str
    inputs: dict[str, str]
    created: float
    hosts: dict[str, dict[str, object]]  # host -> {"domain", "memory" file, "size", "booted"; "disk"?}
    summary: dict[str, str] = field(default_factory=dict)
    checkout: str | None = None  # the ikedlab checkout that saved it (lab.prune: is it still there?)

    def booted(self, host: str) -> dict[str, str]:
        """The image files `host` booted ("kernel", "initrd", "disk" paths) and the image's "identity"."""
        entry = self.hosts.get(host, {}).get("booted")
        return dict(entry) if isinstance(entry, dict) else {}

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def memory_image(self, host: str) -> Path:
        return self.directory / str(self.hosts[host]["memory"])

    def disk(self, host: str) -> Path | None:
        name = self.hosts[host].get("disk")
        return self.directory / str(name) if name else None

    def checked(self, path: Path) -> Path:
        """`path` (a file of this snapshot), once it is proven to be what was saved: a regular file of ours,
        not a link, with the SHA-256 recorded at save. SnapshotError otherwise."""
        digests: dict[str, str] = {}
        for entry in self.hosts.values():
            if isinstance(sums := entry.get("sha256"), dict):
                digests.update(sums)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise SnapshotError(f"snapshot of lab '{self.lab}': {path.name}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise SnapshotError(f"snapshot of lab '{self.lab}': {path.name} is not a file of ours")
            if path.name not in digests:
                raise SnapshotError(f"snapshot of lab '{self.lab}': no digest was recorded for {path.name}")
            if file_sha256(f) != digests[path.name]:
                raise SnapshotError(
                    f"snapshot of lab '{self.lab}': {path.name} is not the file that was saved "
                    "(its SHA-256 differs): not restored"
                )
        return path

    def problem(self) -> str | None:
        """Why the files cannot be trusted (missing, truncated), or None: cheap checks, no full read."""
        for host, entry in self.hosts.items():
            image = self.memory_image(host)
            try:
                size = image.stat().st_size
            except OSError:
                return f"{image.name} is missing"
            if size != entry.get("size"):
                return f"{image.name} is {size} bytes, {entry.get('size')} were saved"
            disk = self.disk(host)
            if disk and not disk.exists():
                return f"{disk.name} is missing"
        return None


def layer_name(lab: str, layer: str) -> str:
    """A snapshot of one layer of a lab (its booted base: lab/base.py) is named LAB.LAYER: never a lab's name
    (those have no dot), and `lab_of` gives the lab back."""
    return f"{lab}.{layer}"


def lab_of(name: str) -> str:
    """The lab a snapshot name belongs to (the name itself for a lab's provisioned snapshot)."""
    return name.split(".", 1)[0]


def directory(lab: str) -> Path:
    return snapshots_root() / lab


def load(lab: str) -> Snapshot | None:
    """The lab's snapshot; None when it has none. SnapshotError when it exists but cannot be read."""
    folder = directory(lab)
    meta = folder / META
    if not meta.exists():
        return None
    try:
        data = json.loads(meta.read_text())
        if data.get("format") != FORMAT:
            raise SnapshotError(f"snapshot of lab '{lab}' has format {data.get('format')}, not {FORMAT}")
        return Snapshot(
            lab,
            folder,
            data["key"],
            data["inputs"],
            data["created"],
            data["hosts"],
            data.get("summary", {}),
            data.get("checkout"),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SnapshotError(f"snapshot of lab '{lab}' is unreadable ({meta}: {e})") from None


def all_snapshots() -> list[Snapshot | SnapshotError]:
    root = snapshots_root()
    found: list[Snapshot | SnapshotError] = []
    for folder in sorted(root.iterdir()) if root.exists() else []:
        try:
            snap = load(folder.name)
        except SnapshotError as e:
            found.append(e)
            continue
        if snap:
            found.append(snap)
    return found


def usable(lab: str, inputs: Inputs) -> tuple[Snapshot | None, str | None]:
    """The lab's snapshot if it matches `inputs` exactly, else (None, one line saying why; None if none)."""
    try:
        snap = load(lab)
    except SnapshotError as e:
        return None, str(e)
    if snap is None:
        return None, None
    if snap.key != inputs.key:
        changed = inputs.changed(snap.inputs)
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        return None, f"snapshot of lab '{lab}' is stale: {shown or 'its key'} changed"
    why = snap.problem()
    if why:
        return None, f"snapshot of lab '{lab}' is corrupt: {why}"
    return snap, None


class Writer:
    """Builds a snapshot in a private folder beside the lab's, then swaps it in whole: a crash while saving
    never leaves a half-written snapshot that looks usable."""

    def __init__(self, lab: str, inputs: Inputs) -> None:
        self.lab, self.inputs = lab, inputs
        self.final = directory(lab)
        self.folder = self.final.with_name(f".{lab}.partial")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, mode=0o700)
        self.folder.parent.chmod(0o700)
        self.hosts: dict[str, dict[str, object]] = {}

    def memory_path(self, host: str) -> Path:
        return self.folder / f"{host}.save"

    def add(
        self, host: str, domain: str, disk: Path | None = None, booted: dict[str, str] | None = None
    ) -> None:
        """`booted`: the image files the guest booted and the image's identity, so a later `up` boots the
        same files while they exist (their paths are in the saved domain)."""
        image = self.memory_path(host)
        image.chmod(0o600)
        entry: dict[str, object] = {"domain": domain, "memory": image.name, "size": image.stat().st_size}
        sha256 = {image.name: _sha256(image)}
        if booted:
            entry["booted"] = booted
        if disk:
            copy = self.folder / f"{host}.qcow2"
            shutil.copyfile(disk, copy)
            copy.chmod(0o600)
            entry["disk"] = copy.name
            sha256[copy.name] = _sha256(copy)
        entry["sha256"] = sha256
        self.hosts[host] = entry

    def commit(self) -> Snapshot:
        meta = {
            "format": FORMAT,
            "key": self.inputs.key,
            "inputs": self.inputs.values,
            "summary": self.inputs.summary,
            "created": time.time(),
            "hosts": self.hosts,
            "checkout": CHECKOUT,
        }
        path = self.folder / META
        path.write_text(json.dumps(meta, indent=2))
        path.chmod(0o600)
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.folder, self.final)
        snap = load(self.lab)
        assert snap
        return snap

    def abandon(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return file_sha256(f)


def remove(lab: str) -> bool:
    """Delete every snapshot of `lab`, its booted base included; True when there was one."""
    root = snapshots_root()
    names = {p.name for p in root.iterdir() if lab_of(p.name) == lab} if root.is_dir() else set()
    existed = False
    for name in names | {lab}:
        existed = discard(name) or existed
    return existed


def discard(name: str) -> bool:
    """Delete the one snapshot `name` (a lab's, or one layer of it); True when it was there."""
    folder = directory(name)
    existed = folder.exists()
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.with_name(f".{name}.partial"), ignore_errors=True)
    return existed
