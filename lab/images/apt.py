"""Debian's apt on the host: the recipe's package closure and its versions, and the .deb files.

`apt_state()` fingerprints apt's lists without running a program, so the warm path can tell whether the
versions need resolving again. `tool()` finds the host's Debian tools (apt, dpkg-deb, depmod).

Suites the host's apt does not carry (trixie for iked 7.4 and strongSwan 6) get a private apt state directory
in the cache (`SuiteApt`): its own sources list, lists and archives, passed to apt with -o options, so the
host's apt is never changed. Its sources name the host's own Debian mirror and the archive keyring.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.command import require, run
from lab.errors import CommandFailed, ImageError
from lab.images.cache import default_cache_dir
from lab.images.recipe import HOST_SUITE, Recipe
from lab.progress import say

#: apt's view of the archive. A change here makes the next call re-resolve versions (about 1.5 s).
APT_STATE_DIRS = (Path("/var/lib/apt/lists"), Path("/etc/apt"))
#: apt's own download cache, searched before downloading.
APT_ARCHIVES = Path("/var/cache/apt/archives")

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


def apt_state(suite: str = HOST_SUITE) -> str:
    """A fingerprint of apt's package lists and configuration: names, sizes, times. No program runs."""
    digest = hashlib.sha256()
    bases = APT_STATE_DIRS if suite == HOST_SUITE else (SuiteApt(suite).directory,)
    for base in bases:
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


# --- a private apt for another suite -----------------------------------------------------------------

ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class SuiteApt:
    """apt pointed at one more Debian suite through a private state directory (never the host's apt)."""

    suite: str
    cache_dir: Path | None = None

    @property
    def directory(self) -> Path:
        return (self.cache_dir or default_cache_dir()) / "apt" / self.suite

    def options(self) -> list[str]:
        d = self.directory
        return [
            *("-o", f"Dir::Etc::SourceList={d / 'sources.list'}"),
            *("-o", "Dir::Etc::SourceParts=/nonexistent"),
            *("-o", f"Dir::State::Lists={d / 'lists'}"),
            *("-o", f"Dir::State::status={d / 'status'}"),  # empty: nothing is installed here
            *("-o", f"Dir::Cache={d / 'cache'}"),
        ]

    def ready(self) -> list[str]:
        """The -o options, after fetching the suite's lists if this directory has none yet."""
        d = self.directory
        if not any((d / "lists").glob("*_Packages*")):
            self.update()
        return self.options()

    def update(self) -> None:
        d = self.directory
        if not ARCHIVE_KEYRING.is_file():
            raise ImageError(
                f"Debian {self.suite} needs the archive keyring {ARCHIVE_KEYRING}",
                "apt-get install debian-archive-keyring",
            )
        for sub in ("lists/partial", "cache/archives/partial"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "status").touch()
        mirror = host_mirror()
        signed = f"[signed-by={ARCHIVE_KEYRING}]"
        (d / "sources.list").write_text(
            f"deb {signed} {mirror} {self.suite} main\ndeb-src {signed} {mirror} {self.suite} main\n"
        )
        say(f"Fetching Debian {self.suite}'s package lists into {d}")
        try:
            run([tool("apt-get", "apt"), *_sandbox(), *self.options(), "update"], timeout=600)
        except CommandFailed as e:
            raise ImageError(
                f"apt could not fetch Debian {self.suite}'s package lists: {e}",
                f"check that the Debian mirror {mirror} is reachable",
            ) from None


def host_mirror() -> str:
    """The Debian mirror the host's apt uses for its own suite."""
    try:
        out = run(
            [tool("apt-get", "apt"), "indextargets", "--format", "$(REPO_URI) $(RELEASE)"], timeout=60
        ).stdout.decode()
    except CommandFailed as e:
        raise ImageError(f"cannot read the host's apt sources: {e}") from None
    for line in out.splitlines():
        uri, _, release = line.partition(" ")
        if release == HOST_SUITE:
            return uri.rstrip("/")
    raise ImageError(
        f"the host's apt has no Debian {HOST_SUITE} source to take the mirror from",
        "the image is built from Debian packages: add Debian's sources to the host's apt",
    )


def _sandbox() -> list[str]:
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def suite_options(suite: str) -> list[str]:
    """apt's -o options for a suite: none for the host's own."""
    return [] if suite == HOST_SUITE else SuiteApt(suite).ready()


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
    options = suite_options(recipe.suite)
    try:
        # The kernel always from the host's suite; the packages from the recipe's.
        kernel_graph = parse_depends(
            run([apt_cache, "depends", *APT_DEPENDS_FLAGS, recipe.kernel], timeout=120).stdout.decode()
        )
        depends = run([apt_cache, *options, "depends", *APT_DEPENDS_FLAGS, *recipe.packages], timeout=120)
    except CommandFailed as e:
        raise ImageError(
            f"apt could not resolve the Linux image's packages: {e}",
            "run `apt-get update` (the image is made of Debian packages); check images/linux/recipe.yaml",
        ) from None
    graph = parse_depends(depends.stdout.decode())
    names = sorted(package_closure(graph, recipe.packages, recipe.exclude))
    kpkg = kernel_package(kernel_graph, recipe.kernel)
    policy = parse_policy(run([apt_cache, *options, "policy", *names], timeout=120).stdout.decode())
    policy |= parse_policy(run([apt_cache, "policy", kpkg], timeout=120).stdout.decode())
    if missing := [n for n in [*names, kpkg] if not policy.get(n)]:
        raise ImageError(
            f"no installable version of {', '.join(missing)}",
            f"run `apt-get update`; the image is made of Debian {recipe.suite} packages",
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


def fetch_debs(wanted: Mapping[str, str], debs: Path, suite: str = HOST_SUITE) -> dict[str, Path]:
    """name -> .deb of that exact version (from `suite`), reusing earlier downloads and apt's cache.

    A reused file must have the SHA-256 apt's signed package lists give for that version: a .deb planted in
    the cache (or cut short) is removed and downloaded again, never unpacked into an image."""
    debs.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    hashes = apt_hashes(wanted, suite) if have_apt() else {}
    for name, version in wanted.items():
        hits = [p for p in sorted(debs.glob(deb_pattern(name, version))) if _verified(p, hashes.get(name))]
        if not hits and APT_ARCHIVES.is_dir():
            for cached in sorted(APT_ARCHIVES.glob(deb_pattern(name, version)))[:1]:
                if not _verified(cached, hashes.get(name), remove=False):
                    continue
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
            pinned = (f"{n}={v}" for n, v in sorted(missing.items()))
            try:
                run(
                    [apt_get, *_sandbox(), *suite_options(suite), "download", *pinned],
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


def apt_hashes(wanted: Mapping[str, str], suite: str = HOST_SUITE) -> dict[str, set[str]]:
    """name -> the SHA-256 digests apt's package lists give for `name=version` (signed by the archive's
    Release file, which apt verified when it fetched the lists). One apt-cache call for all."""
    if not wanted:
        return {}
    pinned = [f"{n}={v}" for n, v in sorted(wanted.items())]
    done = run(
        [tool("apt-cache", "apt"), *suite_options(suite), "show", "--no-all-versions", *pinned],
        timeout=120,
        check=False,
    )
    return parse_hashes(done.stdout.decode(errors="replace"), wanted)


def parse_hashes(text: str, wanted: Mapping[str, str]) -> dict[str, set[str]]:
    """`apt-cache show` records -> name -> SHA256 values of the wanted version."""
    found: dict[str, set[str]] = {}
    for record in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in record.splitlines() if ": " in line and not line.startswith(" ")
        )
        name, version, sha = fields.get("Package", ""), fields.get("Version"), fields.get("SHA256")
        if name in wanted and version == wanted[name] and sha:
            found.setdefault(name, set()).add(sha.strip())
    return found


def _verified(deb: Path, digests: set[str] | None, remove: bool = True) -> bool:
    """The .deb has one of apt's digests for its version (no digest known: apt is not here, a copied
    cache is trusted as the cache folder is: ours alone). A mismatch is said, and the file removed."""
    if digests is None:
        return True
    h = hashlib.sha256()
    with deb.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() in digests:
        return True
    say(f"{deb} does not match the SHA-256 apt has for it: not used" + (", removed" if remove else ""))
    if remove:
        deb.unlink(missing_ok=True)
    return False
