"""The Linux appliance golden image: Debian's cloud kernel plus an initramfs unpacked from Debian packages.

Everything happens on the host without root: apt resolves and downloads the packages, `dpkg-deb` unpacks
them into a staging tree, and a small cpio writer packs the tree with fixed owners, times and order, so the
same inputs give the same bytes. The recipe is data (images/linux/); its files, the package versions and
this module's own source make the manifest whose hash is the cache key.
"""

from __future__ import annotations

import fcntl
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml

from lab import PROJECT_ROOT
from lab.command import require, run
from lab.errors import CommandFailed, ImageError
from lab.progress import say, step

log = logging.getLogger("ikedlab.images")

RECIPE_DIR = PROJECT_ROOT / "images" / "linux"
#: Bump when the cache layout or image.json changes shape.
FORMAT = 1
#: Every file in the initramfs gets this modification time: same inputs, same bytes.
MTIME = 0
#: gzip level 6: level 9 is twice as slow here for under 2% less.
GZIP_LEVEL = 6
#: Top-level directories that are symlinks into /usr in the guest (merged /usr, as Debian does).
MERGED = ("bin", "sbin", "lib", "lib64")
#: Where busybox applet links must not shadow a real program of the same name.
BIN_DIRS = ("usr/sbin", "usr/bin")
#: apt's view of the archive. A change here makes the next call re-resolve versions (about 1.5 s).
APT_STATE_DIRS = (Path("/var/lib/apt/lists"), Path("/etc/apt"))
#: apt's own download cache, searched before downloading.
APT_ARCHIVES = Path("/var/cache/apt/archives")
#: Written into the cpio only: an unprivileged build cannot make device nodes. The kernel opens
#: /dev/console for PID 1 before /init can mount devtmpfs.
DEVICE_NODES = {"dev/console": (stat.S_IFCHR | 0o600, (5, 1)), "dev/null": (stat.S_IFCHR | 0o666, (1, 3))}

APT_DEPENDS_FLAGS = (
    "--recurse",
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
    "--no-pre-depends",
)


@dataclass(frozen=True)
class LinuxImage:
    kernel: Path  # vmlinuz
    initrd: Path  # initramfs (gzip cpio)
    cmdline: str  # base kernel command line; the hypervisor appends "ikedlab.hostname=NAME"
    key: str  # the cache key (hash of manifest)
    manifest: dict  # inputs: recipe file hashes, package names+versions, kernel version


def default_cache_dir() -> Path:
    if env := os.environ.get("IKEDLAB_CACHE_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "ikedlab"
    return Path.home() / ".cache" / "ikedlab"


def cached_linux_image(cache_dir: Path | None = None) -> LinuxImage | None:
    """The image last built into this cache, whatever its inputs; None if there is none."""
    found = _Store(_linux_dir(cache_dir)).current()
    return found.image if found else None


def linux_image(cache_dir: Path | None = None, *, rebuild: bool = False) -> LinuxImage:
    """Return the cached image, building it when missing or when its inputs changed.

    The warm path runs no program: it hashes the recipe files and compares apt's list files (size, time)
    with what they were when the versions were last resolved. Only when those differ does it ask apt.
    """
    recipe = Recipe.load(RECIPE_DIR)
    local = local_inputs(recipe)
    store = _Store(_linux_dir(cache_dir))
    if not rebuild:
        current = store.current()
        if current and current.matches(local) and current.apt_state == apt_state():
            return current.image
    with store.locked():
        current = store.current()  # another process may have built it while we waited
        state = apt_state()
        if not rebuild and current and current.matches(local) and current.apt_state == state:
            return current.image
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


def _linux_dir(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "linux"


def _debs_dir(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "debs"


def tool(program: str, package: str) -> str:
    """A host program's path; also looks in the sbin directories a user's PATH often lacks (depmod)."""
    try:
        return require(program, package)
    except CommandFailed:
        for directory in ("/usr/sbin", "/sbin"):
            if os.access(f"{directory}/{program}", os.X_OK):
                return f"{directory}/{program}"
        raise


def have_apt() -> bool:
    try:
        tool("apt-cache", "apt")
    except CommandFailed:
        return False
    return True


# --- the recipe -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    directory: Path
    packages: tuple[str, ...]
    exclude: frozenset[str]
    kernel: str
    cmdline: str
    modules: tuple[str, ...]
    strip: tuple[str, ...]
    require: tuple[str, ...]
    keep: tuple[str, ...]
    directories: Mapping[str, int]
    symlinks: Mapping[str, str]
    modes: Mapping[str, int]

    @property
    def init(self) -> Path:
        return self.directory / "init"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @classmethod
    def load(cls, directory: Path) -> Recipe:
        path = directory / "recipe.yaml"
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ImageError(f"cannot read the Linux image recipe {path}: {e}") from None
        problems: list[str] = []
        if not isinstance(data, dict):
            raise ImageError(f"{path}: expected a mapping of recipe fields")

        def names(field: str, required: bool = True) -> tuple[str, ...]:
            value = data.get(field, None if required else [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                problems.append(f"{field}: expected a list of names")
                return ()
            return tuple(value)

        def text(field: str) -> str:
            value = data.get(field)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{field}: expected a string")
                return ""
            return value.strip()

        def mapping(field: str) -> dict[str, str]:
            value = data.get(field, {}) or {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                problems.append(f"{field}: expected a mapping of path to string")
                return {}
            return {str(k).strip("/"): v for k, v in value.items()}

        def modes(field: str) -> dict[str, int]:
            result = {}
            for where, mode in mapping(field).items():
                try:
                    result[where] = int(mode, 8)
                except ValueError:
                    problems.append(f"{field}.{where}: {mode!r} is not an octal mode")
            return result

        recipe = cls(
            directory=directory,
            packages=names("packages"),
            exclude=frozenset(names("exclude", required=False)),
            kernel=text("kernel"),
            cmdline=text("cmdline"),
            modules=names("modules"),
            strip=tuple(s.strip("/") for s in names("strip", required=False)),
            require=tuple(r.strip("/") for r in names("require", required=False)),
            keep=names("keep", required=False),
            directories=modes("directories"),
            symlinks=mapping("symlinks"),
            modes=modes("modes"),
        )
        if excluded_roots := sorted(set(recipe.packages) & recipe.exclude):
            problems.append(f"exclude: {', '.join(excluded_roots)} also listed in packages")
        if unknown := sorted(set(data) - {f.name for f in cls.__dataclass_fields__.values()}):
            problems.append(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if not (directory / "init").is_file():
            problems.append(f"the PID 1 script {directory / 'init'} is missing")
        if problems:
            hint = "; ".join(problems[1:]) or None
            raise ImageError(f"{path}: {problems[0]}", hint)
        return recipe


def recipe_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under the recipe directory, by relative path."""
    hashes = {}
    for path in walk(directory):
        rel = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            hashes[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def walk(root: Path) -> list[Path]:
    """Everything under root, sorted, not following symlinks (bin -> usr/bin must stay one entry)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [Path(dirpath, n) for n in dirnames + filenames]
    return sorted(found)


def local_inputs(recipe: Recipe) -> dict[str, Any]:
    """The manifest's inputs that need no apt: the recipe files and the builder's own source."""
    return {
        "format": FORMAT,
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "recipe": recipe_hashes(recipe.directory),
    }


def manifest_key(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Every difference between two manifests, one line each, for --debug."""
    changes = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section), new.get(section)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            for name in sorted(set(before) | set(after)):
                if name not in before:
                    changes.append(f"{section}: added {name} {after[name]}")
                elif name not in after:
                    changes.append(f"{section}: removed {name}")
                elif before[name] != after[name]:
                    changes.append(f"{section}: {name} {before[name]} -> {after[name]}")
        else:
            changes.append(f"{section}: {before} -> {after}")
    return changes


def summarize_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """One line naming what changed, e.g. 'packages (libssl3, openssl); recipe (init)'."""
    parts = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section), new.get(section)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            names = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
            shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            parts.append(f"{section} ({shown})")
        else:
            parts.append(section)
    return "; ".join(parts) or "none"


def apt_state() -> str:
    """A fingerprint of apt's package lists and configuration: names, sizes, times. No program runs."""
    digest = hashlib.sha256()
    for base in APT_STATE_DIRS:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in ("partial", "auxfiles"))
            for name in sorted(set(filenames) - {"lock"}):  # apt touches its lock on every update
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# --- apt: the package closure and its versions ------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    packages: Mapping[str, str]  # name -> version, the initramfs's packages
    kernel_package: str  # e.g. linux-image-6.1.0-56-cloud-amd64
    kernel_version: str  # its Debian version
    kernel_release: str  # uname -r, the /lib/modules directory

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Resolved:
        kernel = manifest["kernel"]
        return cls(manifest["packages"], kernel["package"], kernel["version"], kernel["release"])

    def manifest(self) -> dict[str, Any]:
        return {
            "packages": dict(sorted(self.packages.items())),
            "kernel": {
                "package": self.kernel_package,
                "version": self.kernel_version,
                "release": self.kernel_release,
            },
        }


def parse_depends(text: str) -> dict[str, list[list[str]]]:
    """`apt-cache depends --recurse` output -> package -> its Depends groups, each a list of alternatives.

    A virtual package (`<name>`) is replaced by its providers, in apt's order; one with no provider
    simply contributes nothing. `|Depends:` chains a line with the next into one group.
    """
    graph: dict[str, list[list[str]]] = {}
    deps: list[list[str]] | None = None
    group: list[str] = []  # alternatives collected so far
    last: list[str] | None = None  # the group a provider line belongs to
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            deps = graph.setdefault(line.strip(), [])
            group, last = [], None
            continue
        if deps is None:
            continue
        stripped = line.strip()
        if line.startswith("    ") and ":" not in stripped:  # a provider of the virtual package above
            if last is not None:
                last.append(stripped)
            continue
        alternative = stripped.startswith("|")
        kind, _, name = stripped.lstrip("|").partition(": ")
        if kind not in ("Depends", "PreDepends"):
            last = None
            continue
        if not name.startswith("<"):
            group.append(name)
        last = group
        if not alternative:
            deps.append(group)
            group = []
    return graph


def package_closure(
    graph: Mapping[str, list[list[str]]], roots: Iterable[str], exclude: Iterable[str]
) -> set[str]:
    """The packages reachable from roots, taking in each group the first alternative that is a real,
    not excluded package. Excluded packages are not followed; a group with no usable alternative is
    dropped (it only named excluded or virtual packages)."""
    skip = set(exclude)
    chosen: set[str] = set()
    todo = [r for r in roots if r not in skip]
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        chosen.add(name)
        for alternatives in graph.get(name, []):
            pick = next((a for a in alternatives if a not in skip and a in graph), None)
            if pick is not None:
                todo.append(pick)
    return chosen


def parse_policy(text: str) -> dict[str, str | None]:
    """`apt-cache policy A B …` -> name -> candidate version (None for `(none)`)."""
    result: dict[str, str | None] = {}
    name: str | None = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            name = line[:-1]
        elif name and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            result[name] = None if version == "(none)" else version
            name = None
    return result


def kernel_package(graph: Mapping[str, list[list[str]]], meta: str) -> str:
    """The versioned linux-image package a kernel metapackage depends on."""
    for alternatives in graph.get(meta, []):
        for name in alternatives:
            if name.startswith("linux-image-") and name != meta:
                return name
    raise ImageError(
        f"{meta} does not depend on a linux-image-<release> package",
        "check `kernel:` in images/linux/recipe.yaml (e.g. linux-image-cloud-amd64)",
    )


def resolve(recipe: Recipe) -> Resolved:
    try:
        apt_cache = tool("apt-cache", "apt")
    except CommandFailed:
        raise ImageError(
            "building the Linux image needs Debian's apt (apt-cache not found)",
            "build on Debian 12 (bookworm), or copy a built cache directory (ikedlab's linux/) from one",
        ) from None
    try:
        depends = run(
            [apt_cache, "depends", *APT_DEPENDS_FLAGS, *recipe.packages, recipe.kernel], timeout=120
        )
    except CommandFailed as e:
        raise ImageError(
            f"apt could not resolve the Linux image's packages: {e}",
            "run `apt-get update` (the image is made of Debian packages); check images/linux/recipe.yaml",
        ) from None
    graph = parse_depends(depends.stdout.decode())
    names = sorted(package_closure(graph, recipe.packages, recipe.exclude))
    kpkg = kernel_package(graph, recipe.kernel)
    policy = parse_policy(run([apt_cache, "policy", *names, kpkg], timeout=120).stdout.decode())
    if missing := [n for n in [*names, kpkg] if not policy.get(n)]:
        raise ImageError(
            f"no installable version of {', '.join(missing)}",
            "run `apt-get update`; the image is made of Debian bookworm packages",
        )
    return Resolved(
        packages={n: policy[n] or "" for n in names},
        kernel_package=kpkg,
        kernel_version=policy[kpkg] or "",
        kernel_release=kpkg.removeprefix("linux-image-"),
    )


# --- fetching .debs ---------------------------------------------------------------------------------


def deb_pattern(name: str, version: str) -> str:
    """The glob of the file `apt-get download name=version` writes (the epoch's colon is %3a)."""
    return glob.escape(f"{name}_{version.replace(':', '%3a')}_") + "*.deb"


def fetch_debs(wanted: Mapping[str, str], debs: Path) -> dict[str, Path]:
    """name -> .deb of that exact version, reusing earlier downloads and apt's own archive cache."""
    debs.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for name, version in wanted.items():
        hits = sorted(debs.glob(deb_pattern(name, version)))
        if not hits and APT_ARCHIVES.is_dir():
            for cached in sorted(APT_ARCHIVES.glob(deb_pattern(name, version)))[:1]:
                partial = debs / f".{cached.name}.partial"  # a copy cut short must not look complete
                shutil.copyfile(cached, partial)
                os.replace(partial, debs / cached.name)
                hits = [debs / cached.name]
        if hits:
            found[name] = hits[0]
    missing = {n: v for n, v in wanted.items() if n not in found}
    if missing:
        say(f"Downloading {len(missing)} Debian package{'s' if len(missing) != 1 else ''}")
        apt_get = tool("apt-get", "apt")
        # Into a private directory first: an interrupted download must not leave a truncated .deb.
        with tempfile.TemporaryDirectory(prefix=".download-", dir=debs) as tmp:
            sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
            try:
                run(
                    [apt_get, *sandbox, "download", *(f"{n}={v}" for n, v in sorted(missing.items()))],
                    cwd=Path(tmp),
                    timeout=1800,
                )
            except CommandFailed as e:
                raise ImageError(
                    f"could not download the Linux image's packages: {e}",
                    "run `apt-get update`; check that the Debian mirror is reachable",
                ) from None
            for deb in Path(tmp).glob("*.deb"):
                os.replace(deb, debs / deb.name)
        for name, version in missing.items():
            hits = sorted(debs.glob(deb_pattern(name, version)))
            if not hits:
                raise ImageError(f"apt-get download did not produce {name} {version}")
            found[name] = hits[0]
    return found


# --- the staging tree -------------------------------------------------------------------------------


def guest_path(member: str) -> str | None:
    """A path in a package -> its path in the merged-/usr guest tree; None for the root itself."""
    name = member[2:] if member.startswith("./") else member
    parts = PurePosixPath(name.lstrip("/")).parts
    if not parts:
        return None
    if parts[0] in MERGED:
        parts = ("usr", *parts)
    return "/".join(parts)


def is_stripped(path: str, patterns: Iterable[str]) -> bool:
    """True if path is, or is under, one of the patterns (globs allowed)."""
    return any(fnmatchcase(path, p) or fnmatchcase(path, p + "/*") for p in patterns)


def unpack_tar(data: bytes, root: Path, strip: tuple[str, ...]) -> None:
    """Extract one package's file system tar into root, merging /bin, /sbin and /lib into /usr."""
    top = root.resolve()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            original = member.name[2:] if member.name.startswith("./") else member.name
            rel = guest_path(member.name)
            if rel is None or is_stripped(rel, strip):
                continue
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
                    shutil.copyfile(root / source, dest)
                    dest.chmod(member.mode & 0o7777)
            elif member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                with extracted, open(dest, "wb") as out:
                    shutil.copyfileobj(extracted, out)
                dest.chmod(member.mode & 0o7777)
            # device nodes and fifos: none needed, and not makeable without root


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


@dataclass(frozen=True)
class ElfInfo:
    interpreter: str | None
    needed: tuple[str, ...]


def elf_info(data: bytes) -> ElfInfo | None:
    """The program interpreter and DT_NEEDED names of a 64-bit little-endian ELF file; None otherwise."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    interpreter = None
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            interpreter = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    sections = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize) for i in range(shnum)]
    needed: list[str] = []
    for _, sh_type, _, _, offset, size, link, _ in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for entry in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, entry)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                start = strtab + value
                needed.append(data[start : data.index(b"\0", start)].decode())
    return ElfInfo(interpreter, tuple(needed))


def library_dirs(root: Path) -> list[str]:
    """Where the guest's ld.so looks for libraries (its ld.so.conf.d plus the defaults), as tree paths."""
    dirs = ["usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64"]
    for conf in sorted((root / "etc/ld.so.conf.d").glob("*.conf")):
        for line in conf.read_text().splitlines():
            if line.startswith("/") and (rel := guest_path(line.strip())) and rel not in dirs:
                dirs.append(rel)
    return dirs


@dataclass(frozen=True)
class LinkCheck:
    problems: list[str]  # e.g. "usr/sbin/arpd needs libdb-5.3.so (not in the image)"
    unused: list[str]  # shared libraries nothing in the image links to


def check_links(root: Path, required: Iterable[str] = (), keep: Iterable[str] = ()) -> LinkCheck:
    """Follow every program's DT_NEEDED libraries, by soname through the library directories, as ld.so
    would. Programs are all ELF files except the shared libraries at the top of a library directory,
    so plugins in subdirectories (ossl-modules/legacy.so) count as programs. `keep` names libraries
    loaded with dlopen (sonames), which no DT_NEEDED mentions."""
    libdirs = library_dirs(root)
    elves: dict[str, ElfInfo] = {}
    for path in walk(root):
        if path.is_symlink() or not path.is_file() or path.suffix == ".ko":
            continue
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        if info := elf_info(path.read_bytes()):
            elves[path.relative_to(root).as_posix()] = info
    libraries = {rel for rel in elves if rel.rsplit("/", 1)[0] in libdirs}
    problems = [f"{rel} is not in the image" for rel in required if in_root(root, rel) is None]
    todo = [(rel, rel) for rel in sorted(elves) if rel not in libraries]
    todo += [(f"{d}/{name}", "keep") for name in keep for d in libdirs if in_root(root, f"{d}/{name}")]
    used: set[str] = set()
    while todo:
        rel, user = todo.pop()
        found = in_root(root, rel)
        if found is None:
            problems.append(f"{user} needs {rel} (not in the image)")
            continue
        real = found.relative_to(root).as_posix()
        if real in used:
            continue
        used.add(real)
        info = elves.get(real)
        if info is None:
            continue
        if info.interpreter:
            todo.append((info.interpreter, real))
        for soname in info.needed:
            lib = next((f"{d}/{soname}" for d in libdirs if in_root(root, f"{d}/{soname}")), None)
            if lib is None:
                problems.append(f"{real} needs {soname} (not in the image)")
            else:
                todo.append((lib, real))
    return LinkCheck(sorted(set(problems)), sorted(libraries - used))


def prune_libraries(root: Path, unused: Iterable[str]) -> int:
    """Delete unused libraries and the symlinks left pointing at them; returns the bytes freed."""
    freed = 0
    for rel in unused:
        freed += (root / rel).stat().st_size
        (root / rel).unlink()
    for d in library_dirs(root):
        if (root / d).is_dir() and not (root / d).is_symlink():
            for link in (root / d).iterdir():
                if link.is_symlink() and in_root(root, link.relative_to(root).as_posix()) is None:
                    link.unlink()
    return freed


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


# --- kernel modules ---------------------------------------------------------------------------------


def module_name(path: str) -> str:
    """kernel/crypto/sha512_generic.ko(.xz) -> sha512_generic; dashes and underscores are the same."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    deps = {}
    for line in text.splitlines():
        module, sep, rest = line.partition(":")
        if sep:
            deps[module.strip()] = rest.split()
    return deps


def select_modules(
    wanted: Iterable[str], deps: Mapping[str, list[str]], builtin: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(module paths to copy, with their dependencies; names matching nothing). Built-ins need no file."""
    by_name = {module_name(p): p for p in deps}
    builtin_names = {module_name(b) for b in builtin}
    chosen: set[str] = set()
    unknown = []
    for item in wanted:
        if "/" in item:
            hits = [p for p in deps if fnmatchcase(p.split(".ko", 1)[0], item.split(".ko", 1)[0])]
            if hits:
                chosen.update(hits)
            else:
                unknown.append(item)
        elif (name := item.replace("-", "_")) in by_name:
            chosen.add(by_name[name])
        elif name not in builtin_names:
            unknown.append(item)
    todo = list(chosen)
    while todo:
        for dep in deps.get(todo.pop(), []):
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return sorted(chosen), unknown


def install_modules(kernel_root: Path, root: Path, release: str, wanted: Iterable[str]) -> list[str]:
    """Copy the wanted modules and their dependencies into root and run depmod there."""
    depmod = tool("depmod", "kmod")
    source = kernel_root / "lib/modules" / release
    run([depmod, "-b", kernel_root, release], timeout=120)  # Debian ships no modules.dep
    deps = parse_modules_dep((source / "modules.dep").read_text())
    builtin = (source / "modules.builtin").read_text().split()
    paths, unknown = select_modules(wanted, deps, builtin)
    if unknown:
        raise ImageError(
            f"kernel {release} has no module {', '.join(unknown)}",
            "fix `modules:` in images/linux/recipe.yaml (names as in modules.dep, or globs with a /)",
        )
    target = root / "usr/lib/modules" / release
    for rel in paths:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target / rel)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    run([depmod, "-b", root, release], timeout=120)  # lib -> usr/lib, so depmod finds usr/lib/modules
    return paths


# --- the initramfs writer ---------------------------------------------------------------------------


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


# --- building ---------------------------------------------------------------------------------------


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
        for data in pool.map(fsys, (debs[n] for n in sorted(resolved.packages))):
            unpack_tar(data, root, recipe.strip)
        kernel.result()

    busybox = in_root(root, "usr/bin/busybox")
    if busybox is None:
        raise ImageError("busybox is not in the image", "keep busybox-static in images/linux/recipe.yaml")
    applets = run([busybox, "--list-full"], timeout=30).stdout.decode().split()
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

    modules = install_modules(kernel_root, root, resolved.kernel_release, recipe.modules)
    log.debug("kernel modules: %d files", len(modules))

    links = check_links(root, recipe.require, recipe.keep)
    if links.problems:
        raise ImageError(
            f"the Linux image is incomplete: {links.problems[0]}",
            "; ".join(links.problems[1:4])
            or "take the package providing it out of `exclude:`, or strip the program, in recipe.yaml",
        )
    freed = prune_libraries(root, links.unused)
    log.debug("pruned %d unused libraries (%.1f MB): %s", len(links.unused), freed / 1e6, links.unused)
    return root, kernel_root


def assemble(recipe: Recipe, resolved: Resolved, debs: Path, out: Path) -> dict[str, int]:
    """Build vmlinuz and initrd.img into out (created); returns the initramfs's sizes."""
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="stage-", dir=out.parent) as tmp:
        files = fetch_debs({**resolved.packages, resolved.kernel_package: resolved.kernel_version}, debs)
        root, kernel_root = stage(recipe, resolved, files, Path(tmp))
        vmlinuz = kernel_root / "boot" / f"vmlinuz-{resolved.kernel_release}"
        if not vmlinuz.is_file():
            raise ImageError(f"{resolved.kernel_package} has no /boot/vmlinuz-{resolved.kernel_release}")
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        with open(out / "initrd.img", "wb") as initrd:
            unpacked = write_initramfs(root, initrd)
    return {"initrd_bytes": (out / "initrd.img").stat().st_size, "unpacked_bytes": unpacked}


@dataclass(frozen=True)
class _Entry:
    """One image in the cache: a directory with vmlinuz, initrd.img and image.json."""

    image: LinuxImage
    apt_state: str
    directory: Path

    def matches(self, local: Mapping[str, Any]) -> bool:
        return all(self.image.manifest.get(k) == v for k, v in local.items())


class _Store:
    """The cache of Linux images. `current` is a symlink to the image in use, swapped atomically; image
    directories are complete before they get a name, so an interrupted build leaves no half image."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.link = directory / "current"

    def current(self) -> _Entry | None:
        return self._load(self.link)

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
        self._point_at(final)
        say(
            f"Linux image: kernel {resolved.kernel_release}, initramfs {sizes['initrd_bytes'] / 1e6:.1f} MB "
            f"gzipped ({sizes['unpacked_bytes'] / 1e6:.1f} MB unpacked), {len(resolved.packages)} packages"
        )
        entry = self._load(self.link)
        assert entry is not None
        return entry

    def _point_at(self, image_dir: Path) -> None:
        tmp = self.directory / f".current-{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(image_dir.name)
        os.replace(tmp, self.link)
        for old in self.directory.iterdir():  # earlier images: QEMU has read them into guest memory
            if old.is_dir() and not old.is_symlink() and not old.name.startswith(".") and old != image_dir:
                shutil.rmtree(old, ignore_errors=True)
