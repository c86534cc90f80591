"""Folders and files only their owner touches: the state and cache folders, and every file ikedlab opens in
them.

ikedlab often runs as root and keeps in its state folder what must stay private (transcripts, the user's
iked.conf, snapshots whose saved domain XML libvirt restores as root). So a state or cache folder must belong
to the user running ikedlab and be writable by nobody else, on the whole way from `/`; anything else is
refused in one line naming the folder and where its path came from (IKEDLAB_STATE_DIR, XDG_STATE_HOME, a
HOME that `sudo -E` kept). Folders are made 0700 (umask 077 for the whole process, `restrict_umask`), and
files are opened without following a symbolic link, so a link planted in place of `owner.lock` can never
make ikedlab truncate another file.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import IO, Any

from lab import settings
from lab.errors import IkedlabError

UMASK = 0o077
#: In a lab's run folder: the users' own files as given (an iked.conf with its PSK), needed to rebuild the
#: lab; never copied into evidence or bundles, gone with `down`.
SECRET_DIR = "secret"


class UnsafePathError(IkedlabError):
    """A folder or file someone else could change (or have planted) where ikedlab keeps private things."""


def restrict_umask() -> None:
    """Everything this process writes from now on is its user's alone (files 0600, folders 0700)."""
    os.umask(UMASK)


def state_dir() -> Path:
    """The state folder (labs, snapshots), made if missing and checked: ours alone."""
    return folder(settings.state_dir(), f"state folder ({settings.state_dir_origin()})")


def labs_dir() -> Path:
    """Every lab's run folder lives here, under its name (blueprint, transcripts, locks, captures), in the
    checked state folder."""
    state_dir()  # checked
    return settings.labs_dir()


def cache_dir() -> Path:
    """The cache folder (images, packages), made if missing and checked: ours alone."""
    return folder(settings.cache_dir(), f"cache folder ({settings.cache_dir_origin()})")


def folder(path: Path, what: str) -> Path:
    """`path`, after checking that nobody but this user can change it or the folders on the way to it; a
    folder of ours that others could read is made private. A missing folder is left to be made by the first
    write (0700 under `restrict_umask`): a refused command creates nothing."""
    path = Path(os.path.abspath(path))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    real = existing.resolve()
    if existing == path:
        st = real.stat()
        if st.st_uid != os.geteuid():
            raise _refused(path, what, f"is owned by {_user(st.st_uid)}, not by {_user(os.geteuid())}")
        if st.st_mode & 0o022:
            raise _refused(path, what, f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
    # Then the way to it (before anything is made under someone else's folder).
    _check_way([*reversed(real.parents), *([real] if existing != path else [])], path, what)
    if existing == path and real.stat().st_mode & 0o077:
        real.chmod(0o700)
    return path


def _check_way(steps: list[Path], path: Path, what: str) -> None:
    """Every folder on the way belongs to root or to us, and no one else can rename entries in it (not
    writable by others, or sticky like /tmp, where only an entry's owner can)."""
    for step in steps:
        st = step.stat()
        if st.st_uid not in (0, os.geteuid()):
            raise _refused(path, what, f"lies in {step}, which is owned by {_user(st.st_uid)}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise _refused(path, what, f"lies in {step}, which others can write to")


def _refused(path: Path, what: str, why: str) -> UnsafePathError:
    return UnsafePathError(
        f"{what} {path} {why}: ikedlab keeps keys and snapshots there and refuses it",
        "use a folder of your own: set IKEDLAB_STATE_DIR / IKEDLAB_CACHE_DIR, or run sudo without -E",
    )


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def tighten(path: Path) -> None:
    """Everything of ours under `path` (itself included) made ours alone, links not followed: for a lab's
    folder an ikedlab older than the umask made (0755 folders, 0644 files), which `make check-secrets` and
    the privileges scenario then find open. Only a lab's own folder: boot files in the cache are hard links
    QEMU's group must read."""
    me = os.geteuid()
    for entry in [path, *(Path(d) / n for d, dirs, files in os.walk(path) for n in dirs + files)]:
        st = entry.lstat()
        if st.st_uid == me and not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            entry.chmod(stat.S_IMODE(st.st_mode) & 0o700)


# --- files --------------------------------------------------------------------------------------------
def open_fd(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that never follows a symbolic link at `path` itself: a planted link is one line, not a write
    through to the file it points at."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == 40 and path.is_symlink():  # ELOOP: the last component is a symbolic link
            raise UnsafePathError(
                f"{path} is a symbolic link (to {os.readlink(path)}); ikedlab never writes through one",
                f"remove it ({path}); someone may have planted it",
            ) from None
        raise


def open_file(path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """open() for ikedlab's own files: 0600, never through a symbolic link. `mode` as open()'s."""
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT}
    base = flags[mode[0]] | (os.O_APPEND if mode[0] == "a" else 0)
    if "+" in mode:
        base = (base & ~(os.O_WRONLY | os.O_RDONLY)) | os.O_RDWR
    return os.fdopen(open_fd(path, base), mode, **kwargs)


def write_text(path: Path, text: str) -> None:
    with open_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with open_file(path, "wb") as f:
        f.write(data)
