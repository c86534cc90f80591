"""A locally built iked in the Linux appliance: OpenIKED portable compiled on the host from a source tree
(an openiked-portable checkout, or `apt-get source openiked`), put over the packaged iked and ikectl of a
running guest through its files channel (lab/delivery.py) before iked starts. The guest boots the plain
image, so one booted base (lab/base.py) serves every build. Builds are cached by the tree's content: the
same tree never builds twice.

The host is Debian bookworm like the default appliance, so the build links against the very libraries
(libc, libcrypto, libevent) the appliance carries.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.command import last_line, require, run
from lab.errors import CommandFailed, ImageError
from lab.images.cache import default_cache_dir
from lab.images.tree import walk
from lab.progress import step

#: What the build needs on the host: a program, or a header, and the Debian package that provides it.
BUILD_NEEDS = (
    ("cmake", "cmake"),
    ("make", "make"),
    ("cc", "gcc"),
    ("bison", "bison"),
    ("/usr/include/event2/event.h", "libevent-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
)
#: Built programs and where the appliance has them.
PROGRAMS = {"iked/iked": "usr/sbin/iked", "ikectl/ikectl": "usr/sbin/ikectl"}
#: Not part of the source: version control, editors' and earlier builds' leftovers.
IGNORED = {".git", ".pc", "build", "obj-x86_64-linux-gnu", "__pycache__"}


@dataclass(frozen=True)
class IkedBuild:
    source: Path
    hash: str  # sha256 of the tree's files
    directory: Path  # the cache entry: usr/sbin/iked, usr/sbin/ikectl, build.log

    @property
    def short(self) -> str:
        return self.hash[:12]

    @property
    def label(self) -> str:
        return f"iked (local build {self.short})"


def tree_hash(source: Path) -> str:
    """sha256 over the tree's relative paths, modes and contents: a one-line change is another build."""
    digest = hashlib.sha256()
    for path in walk(source):
        rel = path.relative_to(source)
        if any(part in IGNORED for part in rel.parts) or path.is_dir():
            continue
        data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        executable = not path.is_symlink() and os.access(path, os.X_OK)
        digest.update(f"{rel.as_posix()}\0{int(executable)}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def missing_build_needs() -> list[str]:
    """Debian packages the build needs that the host lacks."""
    missing = []
    for need, package in BUILD_NEEDS:
        found = Path(need).exists() if need.startswith("/") else shutil.which(need) is not None
        if not found:
            missing.append(package)
    return missing


def build_iked(source: Path, cache_dir: Path | None = None) -> IkedBuild:
    """The cached build of this tree, building it first if needed. ImageError: one line and the log path."""
    source = source.expanduser().resolve()
    if not (source / "CMakeLists.txt").is_file() or not (source / "iked").is_dir():
        raise ImageError(
            f"--iked-source {source}: not an OpenIKED portable tree (no CMakeLists.txt and iked/)",
            "use an openiked-portable checkout, or the tree `apt-get source openiked` unpacks",
        )
    digest = tree_hash(source)
    builds = (cache_dir or default_cache_dir()) / "iked-builds"
    entry = builds / digest[:16]
    build = IkedBuild(source, digest, entry)
    if all((entry / guest).is_file() for guest in PROGRAMS.values()):
        return build
    if missing := missing_build_needs():
        raise ImageError(
            f"building iked needs {', '.join(missing)} on the host",
            f"apt-get install {' '.join(missing)}  (or `make setup`)",
        )
    builds.mkdir(parents=True, exist_ok=True)
    with open(builds / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((entry / guest).is_file() for guest in PROGRAMS.values()):
            return build
        with step(f"Building iked from {source} ({digest[:12]})"):
            _compile(source, entry, builds)
    return build


def _compile(source: Path, entry: Path, builds: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=builds))
    log_path = builds / f"{entry.name}.log"
    try:
        with open(log_path, "wb") as log:
            # The paths the Debian package uses, so the appliance's /etc/iked layout holds.
            configure = [
                "cmake", "-S", str(source), "-B", str(work / "obj"), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                "-DCMAKE_INSTALL_PREFIX=/usr", "-DCMAKE_INSTALL_SYSCONFDIR=/etc",
                "-DCMAKE_INSTALL_LOCALSTATEDIR=/var",
            ]  # fmt: skip
            make = ["make", "-C", str(work / "obj"), f"-j{os.cpu_count() or 1}", "iked", "ikectl"]
            for argv in (configure, make):
                log.write(f"$ {' '.join(argv)}\n".encode())
                try:
                    done = run(argv, timeout=1800, check=False)
                except CommandFailed as e:
                    raise ImageError(f"building iked from {source}: {e} (log: {log_path})") from None
                log.write(done.stdout + done.stderr)
                if done.returncode != 0:
                    first_error = next(
                        (ln for ln in done.stderr.decode(errors="replace").splitlines() if "error" in ln),
                        last_line(done.stderr),
                    )
                    raise ImageError(f"building iked failed: {first_error.strip()} (log: {log_path})")
        staged = work / "entry"
        for built, guest in PROGRAMS.items():
            (staged / guest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / "obj" / built, staged / guest)
        shutil.copyfile(log_path, staged / "build.log")
        os.rename(staged, entry)  # complete before it gets its name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def program_files(entry: Path) -> dict[str, Path]:
    """A build's programs as they go into a guest: path in the guest -> the file here. Without their
    debugging sections (made once, beside the build): iked's gzip'd size falls from 843 to 228 KB, the
    files channel's time with it (3.3 s at load 7 before); the symbols stay."""
    files = {}
    for guest in PROGRAMS.values():
        built, lean = entry / guest, entry / "lean" / guest
        if not lean.is_file():
            lean.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=lean.parent, prefix=f".{lean.name}.")
            os.close(fd)
            run([require("strip", "binutils"), "--strip-debug", "-o", partial, built], timeout=60)
            os.replace(partial, lean)  # whole, or not there: two processes may race to make it
        files[f"/{guest}"] = lean
    return files


def debian_source(dest: Path, suite: str = "trixie") -> Path:
    """Debian's openiked source tree of `suite`, unpacked at `dest/openiked` (reused when there): fetched with
    `apt-get source` through a private apt state (lab/images/apt.py SuiteApt, never the host's apt), whose
    signed lists vouch for the files' hashes. bookworm's own source files were not on the mirror here (404):
    trixie's 7.4 builds on this host against bookworm's libraries."""
    from lab.images.apt import SuiteApt, tool

    tree = dest / "openiked"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        apt = [tool("apt-get", "apt"), *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else [])]
        try:
            with step(f"Fetching Debian {suite}'s openiked source"):
                run([*apt, *SuiteApt(suite).ready(), "source", "--download-only", "openiked"], cwd=Path(tmp))
            dsc = sorted(Path(tmp).glob("openiked_*.dsc"))[-1]
            # The .dsc's signature needs Debian's keyring; apt already checked every file against its lists.
            run([tool("dpkg-source", "dpkg-dev"), "--no-check", "-x", dsc.name, "tree"], cwd=Path(tmp))
        except (CommandFailed, IndexError) as e:
            raise ImageError(f"cannot fetch Debian {suite}'s openiked source: {e}") from None
        os.rename(Path(tmp) / "tree", tree)
    return tree
