"""The Linux appliance golden image: Debian's cloud kernel plus an initramfs unpacked from Debian packages.

Everything happens on the host without root: apt resolves and downloads the packages, `dpkg-deb` unpacks
them into a staging tree, and a small cpio writer packs the tree with fixed owners, times and order, so the
same inputs give the same bytes. The recipe is data (images/linux/); its files, the package versions and
the builder's own source (the Linux modules of lab/images/) make the manifest whose hash is the cache key.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import ImageError
from lab.images.apt import Resolved, apt_state, fetch_debs, have_apt, resolve
from lab.images.cache import default_cache_dir, mark_in_use
from lab.images.initramfs import write_initramfs
from lab.images.libraries import copy_closure
from lab.images.manifest import describe_changes, local_inputs, manifest_key, summarize_changes
from lab.images.recipe import RECIPE_DIR, Recipe, with_variant
from lab.images.rootfs import stage
from lab.images.tree import in_root
from lab.progress import say, step

log = logging.getLogger("ikedlab.images")

KEEP_IMAGES = 3  # images kept in the cache: checkouts at different versions take turns without rebuilding
IN_USE_GRACE = 900.0  # seconds an image stays after a lab last asked for it, however many came since


@dataclass(frozen=True)
class LinuxImage:
    kernel: Path  # vmlinuz
    initrd: Path  # initramfs (gzip cpio)
    cmdline: str  # base kernel command line; the hypervisor appends "ikedlab.hostname=NAME"
    key: str  # the cache key (hash of manifest)
    manifest: dict  # inputs: recipe file hashes, package names+versions, kernel version
    # The image's own iked with its loader and libraries (a tree under the image's folder), which the host
    # runs to judge a user's iked.conf as the guest's iked will; None for an image that has none.
    iked_tree: Path | None = None


#: What the host keeps of the image to run its iked (`iked -n`): iked with everything it loads, the OpenSSL
#: legacy provider it enables at start (else "error enabling legacy provider") and OpenSSL's configuration.
IKED_ON_HOST = ("usr/sbin/iked", "usr/lib/x86_64-linux-gnu/ossl-modules/legacy.so")
IKED_ON_HOST_FILES = ("etc/ssl/openssl.cnf",)


def cached_linux_image(cache_dir: Path | None = None, variant: str | None = None) -> LinuxImage | None:
    """The image last built into this cache, whatever its inputs; None if there is none."""
    found = _Store(_linux_dir(cache_dir, variant)).current()
    return found.image if found else None


def linux_image(
    cache_dir: Path | None = None, *, rebuild: bool = False, variant: str | None = None
) -> LinuxImage:
    """Return the cached image, building it when missing or when its inputs changed.

    `variant` names a file of images/linux/variants/ (e.g. trixie: iked 7.4 and strongSwan); each variant
    has its own cache directory and key. The warm path runs no program: it hashes the recipe files and
    compares apt's list files (size, time) with what they were when the versions were last resolved.
    Only when those differ does it ask apt.
    """
    store = _Store(_linux_dir(cache_dir, variant))
    image = _find_or_build(store, cache_dir, rebuild, variant)
    store.in_use(image)
    return image


def _find_or_build(store: _Store, cache_dir: Path | None, rebuild: bool, variant: str | None) -> LinuxImage:
    recipe = Recipe.load(RECIPE_DIR)
    if variant:
        recipe = with_variant(recipe, variant)
    local = local_inputs(recipe)
    damaged = store.current()
    if damaged and (damage := damaged.damage()):
        say(f"The cached Linux image is damaged ({damage}): rebuilding it")
        rebuild = True
    if not rebuild:
        current = store.current()
        if current and current.matches(local) and current.apt_state == apt_state(recipe.suite):
            return current.image
    with store.locked():
        current = store.current()  # another process may have built it while we waited
        state = apt_state(recipe.suite)
        if not rebuild and current and current.matches(local) and current.apt_state == state:
            return current.image
        # Checkouts of different versions share the cache: an image built earlier for these inputs is
        # taken back instead of rebuilt.
        if not rebuild and (earlier := store.find(local, state)):
            store.point_at(earlier.directory)
            return earlier.image
        if not rebuild and current and current.matches(local) and not have_apt():
            say("apt is not available here: using the cached Linux image without looking for updates")
            return current.image
        with step("Resolving the Linux appliance's packages"):
            manifest = {**local, **resolve(recipe).manifest()}
        key = manifest_key(manifest)
        if not rebuild and current and current.image.key == key:
            store.restamp(current, state)  # apt lists changed, versions did not
            return current.image
        if current and current.image.key != key:
            for change in describe_changes(current.image.manifest, manifest):
                log.debug("image input changed: %s", change)
            say(f"Linux image inputs changed: {summarize_changes(current.image.manifest, manifest)}")
        with step("Building the Linux appliance image"):
            built = store.build(recipe, manifest, key, state, debs=_debs_dir(cache_dir))
        return built.image


def _linux_dir(cache_dir: Path | None, variant: str | None = None) -> Path:
    base = cache_dir or default_cache_dir()
    return base / "linux" if not variant else base / "linux-variants" / variant


def _debs_dir(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "debs"


# --- building ---------------------------------------------------------------------------------------


def assemble(recipe: Recipe, resolved: Resolved, debs: Path, out: Path) -> dict[str, int]:
    """Build vmlinuz and initrd.img into out (created); returns the initramfs's sizes."""
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="stage-", dir=out.parent) as tmp:
        files = fetch_debs(resolved.packages, debs, recipe.suite)
        files |= fetch_debs({resolved.kernel_package: resolved.kernel_version}, debs)  # the host's suite
        root, kernel_root = stage(recipe, resolved, files, Path(tmp))
        vmlinuz = kernel_root / "boot" / f"vmlinuz-{resolved.kernel_release}"
        if not vmlinuz.is_file():
            raise ImageError(f"{resolved.kernel_package} has no /boot/vmlinuz-{resolved.kernel_release}")
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        with open(out / "initrd.img", "wb") as initrd:
            unpacked = write_initramfs(root, initrd)
        if in_root(root, IKED_ON_HOST[0]):
            copy_closure(root, IKED_ON_HOST, out / "iked")
            for rel in IKED_ON_HOST_FILES:
                if found := in_root(root, rel):
                    (out / "iked" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(found, out / "iked" / rel)
    return {
        "initrd_bytes": (out / "initrd.img").stat().st_size,
        "kernel_bytes": (out / "vmlinuz").stat().st_size,
        "unpacked_bytes": unpacked,
    }


@dataclass(frozen=True)
class _Entry:
    """One image in the cache: a directory with vmlinuz, initrd.img and image.json."""

    image: LinuxImage
    apt_state: str
    directory: Path

    def matches(self, local: Mapping[str, Any]) -> bool:
        return all(self.image.manifest.get(k) == v for k, v in local.items())

    def damage(self) -> str | None:
        """What is wrong with the files on disk (a truncated initrd boots into a kernel panic); None if
        they are the size the build wrote."""
        info = json.loads((self.directory / "image.json").read_text())
        for name, key in (("initrd.img", "initrd_bytes"), ("vmlinuz", "kernel_bytes")):
            if key in info and (size := (self.directory / name).stat().st_size) != info[key]:
                return f"{self.directory / name} is {size} bytes, the build wrote {info[key]}"
        return None


class _Store:
    """The cache of Linux images. `current` is a symlink to the image in use, swapped atomically; image
    directories are complete before they get a name, so an interrupted build leaves no half image."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.link = directory / "current"

    def current(self) -> _Entry | None:
        return self._load(self.link)

    def find(self, local: Mapping[str, Any], state: str) -> _Entry | None:
        """A kept image built from these inputs (newest first)."""
        for directory in self._images():
            entry = self._load(directory)
            if entry and entry.matches(local) and entry.apt_state == state:
                return entry
        return None

    def _images(self) -> list[Path]:
        """Complete image directories, newest first."""
        found = [p for p in self.directory.iterdir() if p.is_dir() and not p.is_symlink()]
        found = [p for p in found if not p.name.startswith(".")]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    @staticmethod
    def _load(directory: Path) -> _Entry | None:
        try:
            info = json.loads((directory / "image.json").read_text())
            image = LinuxImage(
                kernel=(directory / "vmlinuz").resolve(strict=True),
                initrd=(directory / "initrd.img").resolve(strict=True),
                cmdline=info["cmdline"],
                key=info["key"],
                manifest=info["manifest"],
                iked_tree=directory.resolve() / "iked"
                if (directory / "iked" / IKED_ON_HOST[0]).is_file()
                else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return _Entry(image, info.get("apt_state", ""), directory.resolve())

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def restamp(self, entry: _Entry, state: str) -> None:
        path = entry.directory / "image.json"
        info = json.loads(path.read_text())
        info["apt_state"] = state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def build(self, recipe: Recipe, manifest: dict[str, Any], key: str, state: str, debs: Path) -> _Entry:
        start = time.monotonic()
        for stale in self.directory.glob(".build-*"):  # left by an interrupted build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        resolved = Resolved.from_manifest(manifest)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.directory))
        try:
            image_dir = work / "image"
            sizes = assemble(recipe, resolved, debs, image_dir)
            info = {
                "key": key,
                "manifest": manifest,
                "cmdline": recipe.cmdline,
                "apt_state": state,
                **sizes,
                "build_seconds": round(time.monotonic() - start, 1),
            }
            (image_dir / "image.json").write_text(json.dumps(info, indent=1, sort_keys=True))
            final = self.directory / f"{key[:16]}-{time.time_ns():x}"
            os.rename(image_dir, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.point_at(final)
        say(
            f"Linux image: kernel {resolved.kernel_release}, initramfs {sizes['initrd_bytes'] / 1e6:.1f} MB "
            f"gzipped ({sizes['unpacked_bytes'] / 1e6:.1f} MB unpacked), {len(resolved.packages)} packages"
        )
        entry = self._load(self.link)
        assert entry is not None
        return entry

    def point_at(self, image_dir: Path) -> None:
        tmp = self.directory / f".current-{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(image_dir.name)
        os.replace(tmp, self.link)
        os.utime(image_dir)  # the newest in use: kept longest
        # A few earlier images stay (another checkout may be about to boot one); older ones go.
        for old in self._images()[KEEP_IMAGES:]:
            # ...and none that a lab was handed lately: its QEMU may not have opened the kernel yet.
            if old != image_dir and time.time() - old.stat().st_mtime > IN_USE_GRACE:
                shutil.rmtree(old, ignore_errors=True)

    def in_use(self, image: LinuxImage) -> None:
        """Mark the image as just handed to a lab: no other process removes it."""
        mark_in_use(image.kernel)
