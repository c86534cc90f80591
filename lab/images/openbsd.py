"""The OpenBSD golden image: one qcow2 per release, built from verified install media, cached.

`build_openbsd_image()` fetches and verifies the media (lab.images.media), boots it in plain QEMU with the
serial console on stdio, runs the unattended install (lab.images.installer) and stores the disk and a JSON
manifest in the cache's openbsd/ directory. The manifest is the cache key: the release, a hash of the recipe
(images/openbsd/*), the ISO's SHA256 and whether it was verified. A recipe change makes the cached image
stale; `cached_openbsd_image()` then answers None.

`release="snapshots"` (OpenBSD -current) builds one image per snapshot build, named by its build date
(openbsd-snapshot-20260520-0312-amd64.qcow2); `cached_openbsd_image("snapshots")` is the newest of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pexpect

from lab import settings
from lab.command import clean_env, require, run
from lab.errors import ImageError
from lab.images.installer import InstallerError, Timeouts, Typing, run_install
from lab.images.media import (
    IMAGES_DIR,
    SNAPSHOTS,
    Media,
    check_release_or_snapshots,
    current_snapshot,
    fetch_media,
    openbsd_cache_dir,
    snapshot_build,
)
from lab.progress import say, step

ARCH = "amd64"
DEFAULT_RELEASE = settings.OPENBSD_RELEASE
RELEASE_RE = re.compile(r"\d\.\d")
DISK_SIZE = "8G"
BUILD_MEMORY_MIB = 1024
MANIFEST_VERSION = 1
#: Sets left out of the image: no X, no games, no manual pages, no compilers (the lab needs none; without
#: cc, /etc/rc's library relinking cannot run, so the installer dialogue sets library_aslr=NO).
SETS = "-x* -game* -man* -comp*"


@dataclass(frozen=True)
class OpenBSDImage:
    path: Path  # the qcow2
    release: str
    key: str  # the cache key: release, architecture and recipe hash
    manifest: dict[str, Any]

    @property
    def verified(self) -> bool:
        return bool(self.manifest.get("verified"))


def recipe_hash(images_dir: Path = IMAGES_DIR) -> str:
    """SHA256 over the recipe files (names, contents; not the prose *.md), so any change rebuilds."""
    digest = hashlib.sha256(f"manifest-v{MANIFEST_VERSION}\n".encode())
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(str(path.relative_to(images_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def render_install_conf(
    root_password: str,
    hostname: str = "ikedlab",
    release: str = "",
    timezone: str = "UTC",
    disk: str = "sd0",
    sets: str = SETS,
    domain: str = "lab.invalid",
    images_dir: Path = IMAGES_DIR,
) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - a plain-text answer file, not HTML
    )
    return env.get_template("install.conf.j2").render(
        hostname=hostname,
        root_password=root_password,
        release=release,
        timezone=timezone,
        disk=disk,
        sets=sets,
        domain=domain,
    )


def ttys_lines(images_dir: Path = IMAGES_DIR) -> list[str]:
    """The /etc/ttys lines of the golden image (images/openbsd/ttys): a root getty on tty01 (com1), the
    control channel ikedlab's commands use while the learner has com0."""
    text = (images_dir / "ttys").read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _manifests(directory: Path) -> list[dict[str, Any]]:
    manifests = []
    for path in directory.glob(f"openbsd-*-{ARCH}.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            manifests.append(data)
    return manifests


BUILD_RE = re.compile(r"\d{8}-\d{4}")  # a snapshot's build date, as lab.images.media.snapshot_build writes it


def _label(release: str, build: str = "") -> str:
    """What names an image's files: the release (7.9), or a snapshot's build (snapshot-20260520-0312)."""
    return f"snapshot-{build}" if release == SNAPSHOTS else release


def _names(label: str) -> tuple[str, str]:
    stem = f"openbsd-{label}-{ARCH}"
    return f"{stem}.qcow2", f"{stem}.json"


def cached_openbsd_image(
    release: str | None = None, cache_dir: Path | str | None = None, build: str | None = None
) -> OpenBSDImage | None:
    """The cached image for `release` if it exists and was built from the current recipe.

    Without a release: the newest release cached from the current recipe (never a snapshot). For
    "snapshots": the image of `build`, or without one the newest snapshot build cached.
    """
    manifests = _manifests(openbsd_cache_dir(cache_dir))
    if release is None:
        found = (
            cached_openbsd_image(m["release"], cache_dir)
            for m in manifests
            if isinstance(m.get("release"), str) and RELEASE_RE.fullmatch(m["release"])
        )
        images = sorted((i for i in found if i), key=lambda i: tuple(map(int, i.release.split("."))))
        return images[-1] if images else None
    check_release_or_snapshots(release)
    if release == SNAPSHOTS and build is None:
        builds = sorted(
            str(m["build"])
            for m in manifests
            if m.get("release") == SNAPSHOTS and BUILD_RE.fullmatch(str(m.get("build", "")))
        )
        for newest in reversed(builds):
            if (image := cached_openbsd_image(SNAPSHOTS, cache_dir, newest)) is not None:
                return image
        return None
    directory = openbsd_cache_dir(cache_dir)
    disk_name, manifest_name = _names(_label(release, build or ""))
    disk, manifest_path = directory / disk_name, directory / manifest_name
    if not (disk.is_file() and manifest_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("release") != release or manifest.get("recipe") != recipe_hash():
        return None
    return OpenBSDImage(disk, release, manifest["key"], manifest)


def _accel() -> str:
    return settings.forced_accel() or "tcg"  # the install VM does not probe KVM: ask for it explicitly


def qemu_argv(qemu: str, disk: Path, iso: Path, accel: str) -> list[str]:
    """A throwaway install VM: serial on stdio, no network card, no reboot (a reboot ends QEMU)."""
    return [
        qemu,
        "-machine", "pc,graphics=off",  # SeaBIOS prints to the serial line, so boot> is seen there
        "-accel", accel,
        "-m", str(BUILD_MEMORY_MIB),
        "-display", "none",
        "-serial", "stdio",
        "-monitor", "none",
        "-no-reboot",
        "-nic", "none",  # no NIC: the installer configures no network and takes the sets from cd0
        "-device", "virtio-rng-pci",
        "-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe",  # flushed when QEMU exits
        "-drive", f"file={iso},media=cdrom,readonly=on",
        "-boot", "order=d",
    ]  # fmt: skip


def build_openbsd_image(
    release: str = DEFAULT_RELEASE,
    iso: Path | str | None = None,
    mirror: str | None = None,
    signify_key: Path | str | None = None,
    insecure: bool = False,
    cache_dir: Path | str | None = None,
    rebuild: bool = False,
    sig: Path | str | None = None,
    timeouts: Timeouts | None = None,
    *,
    root_password: str,
) -> OpenBSDImage:
    """The golden image for `release`, from the cache or built now (see the module's docstring).
    `root_password` is the one the platform's console logs in with (its data file's)."""
    check_release_or_snapshots(release)
    # A snapshot's image is the current build's: its date comes first (two small files), then the cache.
    build = None
    if release == SNAPSHOTS and iso is None and not rebuild:
        build = snapshot_build(current_snapshot(ARCH, mirror, cache_dir)[2].read_text(errors="replace"))
    if not rebuild and (cached := cached_openbsd_image(release, cache_dir, build)) is not None:
        trust = "" if cached.verified else ", from UNVERIFIED media"
        say(f"OpenBSD {_shown(cached.release, cached.manifest)} image: {cached.path} (cached{trust})")
        return cached

    media = fetch_media(
        release, ARCH, mirror, iso, cache_dir, sig=sig, signify_key=signify_key, insecure=insecure
    )
    if media.snapshot and not rebuild and (cached := cached_openbsd_image(release, cache_dir, media.build)):
        say(f"OpenBSD {_shown(release, cached.manifest)} image: {cached.path} (cached)")
        return cached
    qemu = require("qemu-system-x86_64", "qemu-system-x86")
    qemu_img = require("qemu-img", "qemu-utils")
    directory = openbsd_cache_dir(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    label = _label(release, media.build)
    disk_name, manifest_name = _names(label)
    final, manifest_path = directory / disk_name, directory / manifest_name
    partial = directory / f".{disk_name}.{os.getpid()}.partial"
    transcript = directory / f"openbsd-{label}-{ARCH}.install.log"
    recipe = recipe_hash()
    version = media.version or release  # what the installer greets with: 8.0 on a snapshot after 7.9
    shown = f"-current {version} (snapshot {media.build})" if media.snapshot else release

    try:
        run([qemu_img, "create", "-q", "-f", "qcow2", partial, DISK_SIZE])
        with step(f"Installing OpenBSD {shown} into a new image (serial transcript: {transcript})"):
            seconds = _install(qemu, partial, media, version, transcript, timeouts, root_password)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)

    key = f"openbsd-{label}-{ARCH}-{recipe[:12]}"
    manifest = {
        "key": key,
        "release": release,
        "version": version,
        "build": media.build,
        "arch": ARCH,
        "recipe": recipe,
        "iso": media.iso.name,
        "iso_sha256": media.sha256,
        "verified": media.verified,
        "insecure": not media.verified,
        "how": media.how,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "install_seconds": round(seconds),
    }
    tmp = manifest_path.with_name(f".{manifest_name}.{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)  # the manifest last: its presence means a complete image
    if not media.verified:
        say(f"WARNING: OpenBSD {shown} image built from UNVERIFIED media ({media.how})")
    return OpenBSDImage(final, release, key, manifest)


def _shown(release: str, manifest: dict[str, Any]) -> str:
    """7.9, or "-current 8.0 (snapshot 20260520-0312)"."""
    if release != SNAPSHOTS:
        return release
    return f"-current {manifest.get('version', '?')} (snapshot {manifest.get('build', '?')})"


def _install(
    qemu: str,
    disk: Path,
    media: Media,
    release: str,
    transcript: Path,
    timeouts: Timeouts | None,
    root_password: str,
) -> float:
    argv = qemu_argv(qemu, disk, media.iso, _accel())
    conf = render_install_conf(root_password, release=release)
    with transcript.open("w", encoding="utf-8") as log:
        child = pexpect.spawn(
            argv[0], argv[1:], encoding="utf-8", codec_errors="replace", env=clean_env(), timeout=None
        )
        child.logfile_read = log
        child.delaybeforesend = None  # pacing is Typing's job (lab.images.installer)
        try:
            result = run_install(child, conf, timeouts, Typing(), release=release, ttys=ttys_lines())
            child.expect(pexpect.EOF, timeout=(timeouts or Timeouts()).halt)  # QEMU exits on power-off
        except InstallerError as e:
            last = " | ".join(e.tail.splitlines()[-3:])
            e.hint = f"serial transcript: {transcript}" + (f" (last lines: {last})" if last else "")
            raise
        except pexpect.TIMEOUT:
            raise ImageError(f"QEMU did not exit after the OpenBSD {release} install powered off") from None
        finally:
            child.close(force=True)
    return result.seconds


__all__ = [
    "OpenBSDImage",
    "build_openbsd_image",
    "cached_openbsd_image",
    "qemu_argv",
    "recipe_hash",
    "render_install_conf",
    "ttys_lines",
]
