"""The guest's file tree as staged on the host: walked in a stable order, package paths mapped into the
merged /usr, guest paths followed through symlinks as the guest would follow them."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

#: Top-level directories that are symlinks into /usr in the guest (merged /usr, as Debian does).
MERGED = ("bin", "sbin", "lib", "lib64")


def walk(root: Path) -> list[Path]:
    """Everything under root, sorted, not following symlinks (bin -> usr/bin must stay one entry)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [Path(dirpath, n) for n in dirnames + filenames]
    return sorted(found)


def guest_path(member: str) -> str | None:
    """A path in a package -> its path in the merged-/usr guest tree; None for the root itself."""
    name = member[2:] if member.startswith("./") else member
    parts = PurePosixPath(name.lstrip("/")).parts
    if not parts:
        return None
    if parts[0] in MERGED:
        parts = ("usr", *parts)
    return "/".join(parts)


def in_root(root: Path, rel: str, limit: int = 40) -> Path | None:
    """Where a guest path lands in the staging tree, following symlinks as the guest would (an absolute
    target starts again at root). None if nothing is there or the links loop."""
    todo = [p for p in reversed(rel.split("/")) if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            done = done[:-1]
            continue
        path = root.joinpath(*done, part)
        if not path.is_symlink():
            done.append(part)
            continue
        hops += 1
        if hops > limit:
            return None
        target = os.readlink(path)
        if target.startswith("/"):
            done = []
        todo += [p for p in reversed(target.split("/")) if p not in ("", ".")]
    path = root.joinpath(*done)
    return path if path.exists() else None
