"""The initramfs writer: a gzip'ed newc cpio with fixed owners, times and order, so that the same tree
gives the same bytes."""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from lab.images.tree import walk

#: Every file in the initramfs gets this modification time: same inputs, same bytes.
MTIME = 0
#: gzip level 6: level 9 is twice as slow here for under 2% less.
GZIP_LEVEL = 6
#: Written into the cpio only: an unprivileged build cannot make device nodes. The kernel opens
#: /dev/console for PID 1 before /init can mount devtmpfs.
DEVICE_NODES = {"dev/console": (stat.S_IFCHR | 0o600, (5, 1)), "dev/null": (stat.S_IFCHR | 0o666, (1, 3))}


def newc_entry(
    name: str, mode: int, ino: int, data: bytes = b"", nlink: int = 1, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    """One entry of a newc ("070701") cpio archive, the format the kernel unpacks. Owner root, fixed time."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, MTIME, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
    return header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)


def cpio_entries(root: Path, extra: Mapping[str, tuple[int, tuple[int, int]]]) -> Iterator[bytes]:
    """The tree under root (plus extra device nodes), parents before children, in sorted order."""
    paths = {p.relative_to(root).as_posix(): p for p in walk(root)}
    names = sorted(set(paths) | set(extra), key=lambda n: n.split("/"))
    for ino, name in enumerate(names, start=1):
        if name in extra:
            mode, rdev = extra[name]
            yield newc_entry(name, mode, ino, rdev=rdev)
            continue
        path = paths[name]
        st = path.lstat()
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            yield newc_entry(name, stat.S_IFLNK | 0o777, ino, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            yield newc_entry(name, stat.S_IFDIR | perm, ino, nlink=2)
        elif stat.S_ISREG(st.st_mode):
            yield newc_entry(name, stat.S_IFREG | perm, ino, path.read_bytes())
    yield newc_entry("TRAILER!!!", 0, 0)


def write_initramfs(root: Path, out: IO[bytes]) -> int:
    """Write root as a gzip'ed newc cpio; returns the unpacked (cpio) size in bytes."""
    total = 0
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=MTIME) as gz:
        for entry in cpio_entries(root, DEVICE_NODES):
            gz.write(entry)
            total += len(entry)
    return total
