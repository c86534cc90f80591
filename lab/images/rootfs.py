"""The guest's root file system, staged on the host without root: the packages unpacked into a merged-/usr
tree, busybox applet links, the recipe's own files and kernel modules, then checked so that every program
finds its libraries and pruned of the libraries none uses."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from lab.command import run
from lab.errors import ImageError, first_and_more
from lab.images.apt import Resolved, tool
from lab.images.kernel_modules import install_modules
from lab.images.libraries import check_links, host_argv, prune_libraries
from lab.images.programs import build_programs
from lab.images.recipe import Recipe
from lab.images.tree import MERGED, guest_path, in_root, walk

log = logging.getLogger("ikedlab.images")

#: Where busybox applet links must not shadow a real program of the same name.
BIN_DIRS = ("usr/sbin", "usr/bin")


def is_stripped(path: str, patterns: Iterable[str]) -> bool:
    """True if path is, or is under, one of the patterns (globs allowed)."""
    return any(fnmatchcase(path, p) or fnmatchcase(path, p + "/*") for p in patterns)


def unpack_tar(
    data: bytes, root: Path, strip: tuple[str, ...], rename: Mapping[str, str] | None = None
) -> None:
    """Extract one package's file system tar into root, merging /bin, /sbin and /lib into /usr; `rename`
    moves a path (as merged) elsewhere."""
    top = root.resolve()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            original = member.name[2:] if member.name.startswith("./") else member.name
            rel = guest_path(member.name)
            if rel is None or is_stripped(rel, strip):
                continue
            rel = (rename or {}).get(rel, rel)
            dest = root / rel
            # Never write outside the tree: not by `..`, not through an absolute symlink such as
            # usr/lib/ssl/certs -> /etc/ssl/certs, which on the host points at the host's files.
            if ".." in rel.split("/") or not dest.parent.resolve().is_relative_to(top):
                raise ImageError(f"{member.name}: unpacking it would write outside the image tree")
            if member.isdir():
                if dest.is_symlink():
                    continue  # a directory another package made a symlink: keep the symlink
                dest.mkdir(parents=True, exist_ok=True)
                dest.chmod((member.mode & 0o7777) | 0o700)  # stay writable for the build
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.exists():
                if dest.is_dir() and not dest.is_symlink():
                    continue
                dest.unlink()
            if member.issym():
                target = member.linkname
                if not target.startswith("/") and rel != original and ".." in target.split("/"):
                    # The link moved into /usr: a relative path climbing out of its old place would
                    # now point elsewhere; pin it to where it pointed in the package.
                    target = os.path.normpath("/" + str(PurePosixPath(original).parent / target))
                os.symlink(target, dest)
            elif member.islnk():
                source = guest_path(member.linkname)
                if source and (root / source).exists():
                    # A file of the tree, never a link out of it: a planted package's `x -> /etc/shadow`
                    # then a hard link to `x` copied the host's file into the image.
                    if ".." in source.split("/") or not (root / source).resolve().is_relative_to(top):
                        where = f"a hard link to {member.linkname}, which leads outside the image tree"
                        raise ImageError(f"{member.name}: {where}")
                    shutil.copyfile(root / source, dest)
                    dest.chmod(member.mode & 0o7777)
            elif member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                with extracted, open(dest, "wb") as out:
                    shutil.copyfileobj(extracted, out)
                dest.chmod(member.mode & 0o7777)
            # device nodes and fifos: none needed, and not makeable without root


def busybox_links(root: Path, applets: Iterable[str]) -> list[str]:
    """Make busybox applet symlinks where no real program of that name exists. Returns the links made."""
    real = {p.name for d in BIN_DIRS if (root / d).is_dir() for p in (root / d).iterdir()}
    made = []
    for applet in applets:
        rel = guest_path(applet)
        if rel is None or "/" not in rel:
            continue  # e.g. /linuxrc: not a program directory
        name = rel.rsplit("/", 1)[1]
        if name in real or (root / rel).is_symlink() or (root / rel).exists():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/usr/bin/busybox", root / rel)
        made.append(rel)
    return made


def stage(recipe: Recipe, resolved: Resolved, debs: Mapping[str, Path], work: Path) -> tuple[Path, Path]:
    """Assemble the guest's file system; returns (the tree, the unpacked kernel package)."""
    dpkg_deb = tool("dpkg-deb", "dpkg")
    root, kernel_root = work / "root", work / "kernel"
    for top in MERGED:
        (root / "usr" / top).mkdir(parents=True, exist_ok=True)
        (root / top).symlink_to(f"usr/{top}")

    def fsys(deb: Path) -> bytes:
        return run([dpkg_deb, "--fsys-tarfile", deb], timeout=300).stdout

    with ThreadPoolExecutor(max_workers=4) as pool:
        # The kernel package is the biggest to unpack (90 MB of modules): do it meanwhile.
        kernel = pool.submit(run, [dpkg_deb, "-x", debs[resolved.kernel_package], kernel_root], timeout=300)
        # Sorted order, so a file shipped by two packages always comes from the same one.
        names = sorted(resolved.packages)
        for name, data in zip(names, pool.map(fsys, (debs[n] for n in names)), strict=True):
            unpack_tar(data, root, recipe.strip, recipe.rename.get(name))
        kernel.result()

    if in_root(root, "usr/bin/busybox") is None:
        raise ImageError("busybox is not in the image", "keep busybox-static in images/linux/recipe.yaml")
    applets = run([*host_argv(root, "usr/bin/busybox"), "--list-full"], timeout=30).stdout.decode().split()
    log.debug("busybox applet links: %d", len(busybox_links(root, applets)))

    for rel, mode in recipe.directories.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel).chmod(mode)
    for rel, target in recipe.symlinks.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        dest.symlink_to(target)
    if recipe.rootfs.is_dir():
        for src in walk(recipe.rootfs):
            rel = src.relative_to(recipe.rootfs).as_posix()
            dest = root / rel
            if src.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                if dest.is_symlink():
                    dest.unlink()
                shutil.copyfile(src, dest)
                dest.chmod(recipe.modes.get(rel, 0o755 if os.access(src, os.X_OK) else 0o644))
    shutil.copyfile(recipe.init, root / "init")
    (root / "init").chmod(0o755)
    log.debug("programs built from the recipe's sources: %s", build_programs(recipe, root))

    modules = install_modules(kernel_root, root, resolved.kernel_release, recipe.modules)
    log.debug("kernel modules: %d files", len(modules))

    links = check_links(root, recipe.require, recipe.keep)
    if links.problems:
        message, others = first_and_more(links.problems)
        raise ImageError(
            f"the Linux image is incomplete: {message}",
            "take the package providing it out of `exclude:`, or strip the program, in recipe.yaml",
            others,
        )
    freed = prune_libraries(root, links.unused)
    log.debug("pruned %d unused libraries (%.1f MB): %s", len(links.unused), freed / 1e6, links.unused)
    check_shell_runs_path_first(root)
    return root, kernel_root


#: Names that are busybox applets and also the guide's stand-ins or real programs in the image.
SHADOWED = ("ip", "netstat", "sysctl")


def check_shell_runs_path_first(root: Path) -> None:
    """ImageError unless the image's /bin/sh (a busybox) runs the program PATH names before a busybox applet
    of that name.

    A busybox built with FEATURE_SH_STANDALONE/PREFER_APPLETS (Debian's busybox-static) runs its own `ip`,
    `netstat`, `sysctl` in every script, whatever PATH says, so `sh -c 'netstat -s -p esp'` failed with
    "invalid option -- 's'" while the same line typed at the prompt worked."""
    with tempfile.TemporaryDirectory(prefix="ikedlab-path-") as tmp:
        for name in SHADOWED:
            (Path(tmp) / name).write_text(f"#!/bin/sh\necho path-{name}\n")
            (Path(tmp) / name).chmod(0o755)
        script = "; ".join(SHADOWED)
        done = run(
            [*host_argv(root, "bin/sh"), "sh", "-c", script],
            check=False,
            timeout=30,
            env={"PATH": tmp},
        )
    said = done.stdout.decode(errors="replace").split()
    if said != [f"path-{n}" for n in SHADOWED]:
        raise ImageError(
            f"the image's shell runs busybox applets before PATH ({', '.join(SHADOWED)}): the guide's "
            "commands would not reach scripts",
            "make /bin/sh Debian's busybox (built without FEATURE_SH_STANDALONE), not busybox-static's",
        )
