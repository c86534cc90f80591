"""Reading a bundle someone else made (`ikedlab up --from BUNDLE`): its manifest, topology and user files.

A bundle is input from a stranger, and ikedlab runs as root. So the archive is never extracted: it is read
as one stream, member by member, each name judged before anything is kept, with caps on every member kept
and on all the bytes it holds uncompressed (a gzip bomb stops at the cap, not in memory). Only what the
replay needs is kept: `manifest.json`, the topology it names and the users' iked.conf files. The manifest is
checked field by field (names through lab.gate) before any of it becomes a path, and the files are written
into the lab's own folder under names ikedlab makes. The bundle's `expect_failure` is the author's regex:
run over guest logs it could backtrack for ever, so a replay matches it as plain text.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import gate
from lab.bundle import FORMAT
from lab.errors import LabError
from lab.gate import shown
from lab.versions import ikedlab_version, media_digests

#: All the bytes of a bundle once uncompressed. A real one holds logs, transcripts and up to 8 pcaps: a few
#: MB. Measured: a 2 MB bundle holding 2 GiB of zeros is refused at this cap in 4.3 s (load 11), 23 MiB RSS.
BUNDLE_BYTES = 1 << 30
BUNDLE_MEMBERS = 10_000  # tarfile keeps a header per member read: a cap on its memory too
MANIFEST_BYTES = 256 * 1024
EXPECT_CHARS = 512  # an iked log line's words; "any iked failure" is recorded as its 237-character regex
TEXT_CHARS = 200  # versions, digests

MANIFEST = "manifest.json"
_TOPOLOGY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.ya?ml")  # a top-level member
_USER_CONF = re.compile(r"user/([A-Za-z0-9][A-Za-z0-9._-]{0,99})")


class _TooBig(Exception):
    pass


class _Bounded(io.RawIOBase):
    """A stream that ends the read with _TooBig once more than `limit` bytes came through it."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.count += n
        if self.count > self.limit:
            raise _TooBig
        return n


def _limit(name: str) -> int | None:
    """How many bytes of member `name` the replay keeps; None: it needs nothing of it."""
    if name == MANIFEST:
        return MANIFEST_BYTES
    if _TOPOLOGY.fullmatch(name):
        return gate.TOPOLOGY_BYTES
    if _USER_CONF.fullmatch(name):
        return gate.IKED_CONF_BYTES
    return None


def read_members(archive: Path) -> dict[str, bytes]:
    """The members a replay can use, by their name under the bundle's top folder; nothing else is read
    into memory, nothing is extracted. One line when the archive is no bundle or breaks a cap."""
    kept: dict[str, bytes] = {}
    try:
        with gzip.open(archive) as gz, tarfile.open(fileobj=_Bounded(gz, BUNDLE_BYTES), mode="r|") as tar:
            for count, member in enumerate(tar, 1):
                if count > BUNDLE_MEMBERS:
                    raise LabError(f"{archive}: more than {BUNDLE_MEMBERS} members: not an ikedlab bundle")
                name = member.name.split("/", 1)[-1]
                limit = _limit(name)
                if limit is None or not member.isfile():
                    continue
                if member.size > limit:
                    raise LabError(
                        f"{archive}: {shown(name)} is {member.size} bytes, more than the {limit // 1024} "
                        "KiB ikedlab reads of it"
                    )
                if name in kept:
                    raise LabError(f"{archive}: {shown(name)} is in the bundle twice")
                data = tar.extractfile(member)
                assert data is not None  # a regular file
                kept[name] = data.read(limit + 1)[:limit]
    except _TooBig:
        raise LabError(
            f"{archive}: more than {BUNDLE_BYTES >> 30} GiB once uncompressed: not a bundle ikedlab reads"
        ) from None
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise LabError(f"{archive}: not an ikedlab bundle ({e})") from None
    if MANIFEST not in kept:
        raise LabError(f"{archive}: not an ikedlab bundle (no {MANIFEST})")
    return kept


@dataclass(frozen=True)
class Manifest:
    """What a replay takes from manifest.json, every field checked."""

    topology: str  # the member holding the topology
    topology_name: str  # the file name it had (messages name it)
    platforms: dict[str, str]  # host -> platform
    iked_conf: dict[str, str]  # gateway -> the member holding its user iked.conf
    expect_failure: str | None
    release: str | None
    images: dict[str, dict[str, str]]  # platform -> {part: digest}
    ikedlab: dict[str, str]  # version, commit
    secrets: str = "as given"  # the users' files as written, or how many PSKs the bundle replaced


def parse_manifest(data: bytes) -> Manifest:
    """manifest.json, checked: every problem in one InputError-like list, each naming its field."""
    try:
        raw = json.loads(gate.decode(data, MANIFEST_BYTES))
    except gate.GateError as e:
        raise LabError(f"{MANIFEST}: {e.message}") from None
    except (ValueError, RecursionError) as e:
        raise LabError(f"{MANIFEST}: not JSON ({str(e)[: gate.SHOWN]})") from None
    if not isinstance(raw, dict):
        raise LabError(f"{MANIFEST}: expected a JSON object, found {shown(raw)}")
    if raw.get("format") != FORMAT:
        raise LabError(f"{MANIFEST}: bundle format {shown(raw.get('format'))}, this ikedlab reads {FORMAT}")
    problems: list[str] = []

    def problem(field: str, message: str) -> None:
        problems.append(f"{field}: {message}")

    def mapping(field: str, required: bool = True) -> dict[Any, Any]:
        value = raw.get(field)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            problem(field, f"expected a mapping, found {shown(value)}")
            return {}
        return value

    def text(field: str, value: Any, limit: int = TEXT_CHARS) -> str | None:
        if isinstance(value, str) and len(value) <= limit and value.isprintable():
            return value
        problem(field, f"{shown(value)} is not a line of at most {limit} printable characters")
        return None

    topology = raw.get("topology")
    if not (isinstance(topology, str) and _TOPOLOGY.fullmatch(topology)):
        problem("topology", f"{shown(topology)} is not a topology file of the bundle (NAME.yaml)")
    topology_name = raw.get("topology_name", "topology.yaml")
    if p := gate.FILE.problem(topology_name):
        problem("topology_name", p)
    platforms: dict[str, str] = {}
    for host, platform in mapping("platforms").items():
        if p := gate.HOST.problem(host) or gate.PLATFORM.problem(platform):
            problem(f"platforms.{gate.key(host)}", p)
        else:
            platforms[host] = platform
    if not platforms and not problems:
        problem("platforms", "no host")
    confs: dict[str, str] = {}
    for host, member in mapping("iked_conf", required=False).items():
        if p := gate.HOST.problem(host):
            problem("iked_conf", p)
        elif not (isinstance(member, str) and _USER_CONF.fullmatch(member)):
            problem(f"iked_conf.{host}", f"{shown(member)} is not a user file of the bundle (user/NAME)")
        else:
            confs[host] = member
    expect = raw.get("expect_failure")
    if expect is not None:
        expect = text("expect_failure", expect, EXPECT_CHARS)
    release = raw.get("release")
    if release is not None and (p := gate.RELEASE.problem(release)):
        problem("release", p)
        release = None
    images: dict[str, dict[str, str]] = {}
    for platform, parts in mapping("images", required=False).items():
        where = f"images.{gate.key(platform)}"
        if p := gate.PLATFORM.problem(platform):
            problem("images", p)
        elif not isinstance(parts, dict):
            problem(where, f"expected a mapping, found {shown(parts)}")
        else:
            images[platform] = {}
            for part, digest in parts.items():
                if part not in ("kernel", "initrd", "disk", "manifest"):
                    problem(where, f"{shown(part)} is not one of kernel, initrd, disk, manifest")
                elif (kept := text(f"{where}.{part}", digest)) is not None:
                    images[platform][part] = kept
    version = {}
    for key, value in mapping("ikedlab", required=False).items():
        if key in ("version", "commit") and (kept := text(f"ikedlab.{key}", value)) is not None:
            version[key] = kept
    secrets = text("secrets", raw.get("secrets", "as given")) or "as given"
    if problems:
        first, *others = problems
        more = f" (and {len(others)} more)" if others else ""
        raise LabError(f"{MANIFEST}: {first}{more}", details=others)
    assert isinstance(topology, str) and isinstance(topology_name, str)
    return Manifest(topology, topology_name, platforms, confs, expect, release, images, version, secrets)


@dataclass(frozen=True)
class Replay:
    """What `up --from` needs, written into the lab's folder (`into`), which outlives the command."""

    topology: Path
    platforms: dict[str, str]
    ike_conf_files: dict[str, Path]
    expect_failure: str | None  # the bundle's words, to be matched as plain text (see failure_pattern())
    release: str | None
    manifest: Manifest


def open_bundle(archive: Path, into: Path) -> Replay:
    """Read a bundle's replay inputs and write them into `into` (emptied first) under names of ikedlab's
    making: the topology under its checked file name, each user iked.conf as GATEWAY.iked.conf."""
    members = read_members(archive)
    try:
        manifest = parse_manifest(members[MANIFEST])
    except LabError as e:
        raise LabError(f"{archive}: {e.message}", details=e.details) from None
    for name in (manifest.topology, *manifest.iked_conf.values()):
        if name not in members:
            raise LabError(f"{archive}: the manifest names {shown(name)}, which the bundle lacks")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    topology = _inside(into, manifest.topology_name)
    topology.write_bytes(members[manifest.topology])
    files: dict[str, Path] = {}
    for host, name in manifest.iked_conf.items():
        files[host] = _inside(into, f"{host}.iked.conf")
        files[host].write_bytes(members[name])
        files[host].chmod(0o600)
    return Replay(topology, manifest.platforms, files, manifest.expect_failure, manifest.release, manifest)


def _inside(folder: Path, name: str) -> Path:
    """folder/name, for a name the gate let through: one component, so never outside `folder`."""
    path = folder / name
    assert path.parent == folder and name not in (".", ".."), name
    return path


def failure_pattern(replay: Replay, any_failure: str) -> str | None:
    """The regex `up --from` waits for: the bundle's words as plain text (the author's regex could
    backtrack for ever over a log line), or `any_failure` when the bundle recorded that one."""
    if replay.expect_failure is None:
        return None
    if replay.expect_failure in ("", any_failure):
        return any_failure
    return re.escape(replay.expect_failure)


def differences(replay: Replay, media: dict[str, Any]) -> list[str]:
    """What differs between the bundle's lab and the one about to boot here, one line each."""
    found = []
    here = media_digests(media)
    for platform, parts in replay.manifest.images.items():
        for part, digest in parts.items():
            now = here.get(platform, {}).get(part)
            if now != digest:
                found.append(f"{platform} image {part}: bundle {_short(digest)}, here {_short(now)}")
    then, now_version = replay.manifest.ikedlab, ikedlab_version()
    for key in ("version", "commit"):
        if then.get(key) != now_version[key]:
            found.append(f"ikedlab {key}: bundle {then.get(key)}, here {now_version[key]}")
    return found


def default_platform(platforms: dict[str, str]) -> str:
    """The platform `up` gives hosts whose topology names none: the bundle's most common one."""
    names = list(platforms.values())
    return max(sorted(set(names)), key=names.count)


def _short(digest: str | None) -> str:
    if not digest:
        return "none"
    return digest.split(":", 1)[0] + ":" + digest.split(":", 1)[1][:12] if ":" in digest else digest[:12]
