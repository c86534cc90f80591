"""OpenBSD install media: download (resumable, cached) and signify verification.

The trust anchor is a release's base public key (openbsd-7X-base.pub). OpenBSD signs each release's
SHA256 list with it; `signify -C` checks the signature and then the ISO's checksum in that list. A key is
taken, in order, from the caller (`--signify-key`), the project's `images/openbsd/keys/` (7.5 to 8.0, each
traced to etc/signify/ in OpenBSD's source: images/openbsd/README.md), and the host's /etc/signify. Media
that cannot be verified is refused unless the caller says `insecure=True`, which the returned Media records
and the output shows.

`release="snapshots"` is OpenBSD -current: snapshots/<arch>/ on the mirror, whose SHA256.sig names the next
release's install ISO (install80.iso after 7.9) and is signed with that release's key ("untrusted comment:
verify with openbsd-80-base.pub", signify.c). The snapshot's BUILDINFO (etc/Makefile's `sha` target writes
"Build date: <epoch> - <date>" and lists it in SHA256) names the build: the image is one per build date.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from lab.command import require, run
from lab.errors import ImageError
from lab.images.cache import default_cache_dir
from lab.images.recipe import RECIPES
from lab.progress import say, step

DEFAULT_MIRROR = "https://cdn.openbsd.org/pub/OpenBSD"
IMAGES_DIR = RECIPES / "openbsd"
PROJECT_KEYS_DIR = IMAGES_DIR / "keys"
#: Where an OpenBSD machine keeps release keys; tests point this elsewhere.
SYSTEM_KEY_DIRS: tuple[Path, ...] = (Path("/etc/signify"),)
SIGNIFY = "signify-openbsd"  # Debian's name for OpenBSD's signify(1)
SIGNIFY_PACKAGE = "signify-openbsd"

#: The releases ikedlab builds images of; the base set of the newest carries the next one's key.
SUPPORTED_RELEASES = ("7.5", "7.6", "7.7", "7.8", "7.9")
SNAPSHOTS = "snapshots"  # `--release snapshots`: OpenBSD -current, snapshots/<arch>/ on the mirror

_CHUNK = 1 << 20
_HTTP_TIMEOUT = 60
_SIG_ISO = re.compile(r"^SHA256 \(install(\d)(\d)\.iso\) = ", re.MULTILINE)
_SIG_KEY = re.compile(r"^untrusted comment: verify with (?:\S*/)?(openbsd-\d\d-base\.pub)\s*$", re.MULTILINE)
_BUILD_DATE = re.compile(r"^Build date: (\d+)\b", re.MULTILINE)


class MediaUnavailable(ImageError):
    """The install media could not be downloaded (no network, no such release, ...)."""


class MediaNotVerified(ImageError):
    """The install media could not be verified, or failed verification."""


@dataclass(frozen=True)
class Media:
    iso: Path
    verified: bool
    how: str  # one line: how it was verified, or why it is not; shown to the user and kept in manifests
    sha256: str = ""  # the ISO's SHA256 (from the signed list when verified)
    release: str = ""  # "7.9", or "snapshots"
    arch: str = "amd64"
    version: str = ""  # the OpenBSD version on the media: the release, or a snapshot's (8.0 after 7.9)
    build: str = ""  # a snapshot's build date (BUILDINFO) as 20260520-0312, UTC; "" for a release

    @property
    def snapshot(self) -> bool:
        return self.release == SNAPSHOTS


@dataclass(frozen=True)
class MediaPlan:
    """Where a release's media lives and what verifies it: the URLs a build fetches and the key it uses."""

    release: str  # "7.9" or "snapshots"
    version: str  # "7.9"; a snapshot's version as its signed list names it
    base_url: str  # the mirror's directory for the release and architecture
    iso: str  # install79.iso
    key: str  # openbsd-79-base.pub

    @property
    def sig_url(self) -> str:
        return f"{self.base_url}/SHA256.sig"

    @property
    def iso_url(self) -> str:
        return f"{self.base_url}/{self.iso}"

    @property
    def buildinfo_url(self) -> str:
        return f"{self.base_url}/BUILDINFO"


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """ikedlab's cache: the argument, else $IKEDLAB_CACHE_DIR, $XDG_CACHE_HOME/ikedlab, ~/.cache/ikedlab."""
    return Path(cache_dir) if cache_dir else default_cache_dir()


def openbsd_cache_dir(cache_dir: Path | str | None = None) -> Path:
    return cache_root(cache_dir) / "openbsd"


def check_release(release: str) -> str:
    """'7.9' -> '79' (the file names' form); anything else is a clear error."""
    if not re.fullmatch(r"\d\.\d", release):
        raise ImageError(
            f"'{release}' is not an OpenBSD release (expected a version such as 7.9, or {SNAPSHOTS})"
        )
    return release.replace(".", "")


def check_release_or_snapshots(release: str) -> str:
    """`release` itself when it is a version (7.9) or "snapshots"; a clear error otherwise."""
    if release != SNAPSHOTS:
        check_release(release)
    return release


def next_release(release: str) -> str:
    """The release after `release`: 7.9 -> 8.0 (OpenBSD counts 7.8, 7.9, 8.0)."""
    number = int(check_release(release)) + 1
    return f"{number // 10}.{number % 10}"


def media_plan(
    release: str, mirror: str | None = None, arch: str = "amd64", sig_text: str | None = None
) -> MediaPlan:
    """The URLs and key of `release`'s media. For snapshots the version comes from the signed list when
    it is at hand (`sig_text`), else it is the one after the newest supported release, whose key signs
    snapshots until that release is out."""
    root = (mirror or DEFAULT_MIRROR).rstrip("/")
    if release != SNAPSHOTS:
        return MediaPlan(release, release, f"{root}/{release}/{arch}", iso_name(release), key_name(release))
    version = next_release(SUPPORTED_RELEASES[-1])
    if sig_text is not None:
        if (m := _SIG_ISO.search(sig_text)) is None:
            raise MediaUnavailable(
                f"the snapshot's SHA256.sig at {root}/{SNAPSHOTS}/{arch} lists no install ISO"
            )
        version = f"{m[1]}.{m[2]}"
    return MediaPlan(release, version, f"{root}/{SNAPSHOTS}/{arch}", iso_name(version), key_name(version))


def snapshot_build(buildinfo_text: str) -> str:
    """BUILDINFO's build date ("Build date: 1747000000 - Mon May 12 00:00:00 UTC 2025") as 20250512-0000."""
    if (m := _BUILD_DATE.search(buildinfo_text)) is None:
        raise MediaUnavailable('the snapshot\'s BUILDINFO has no "Build date: <seconds>" line')
    return time.strftime("%Y%m%d-%H%M", time.gmtime(int(m[1])))


def iso_name(release: str) -> str:
    return f"install{check_release(release)}.iso"


def key_name(release: str) -> str:
    return f"openbsd-{check_release(release)}-base.pub"


# --- keys ---------------------------------------------------------------------------------------------


def find_signify_key(release: str, explicit: Path | str | None = None) -> Path | None:
    """The base public key for `release`: the explicit file, else the project's, else the host's."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MediaNotVerified(f"signify key {path} does not exist")
        return path
    for directory in (PROJECT_KEYS_DIR, *SYSTEM_KEY_DIRS):
        candidate = directory / key_name(release)
        if candidate.is_file():
            return candidate
    return None


def _missing_key(release: str) -> MediaNotVerified:
    name = key_name(release)
    return MediaNotVerified(
        f"no signify key for OpenBSD {release} ({name}): fetch etc/signify/{name} from OpenBSD's source "
        "tree and pass --signify-key FILE",
        hint=(
            f"each release's base set carries the next release's key as /etc/signify/{name} "
            f"(in base{int(check_release(release)) - 1}.tgz), and OpenBSD machines of {release} have it; "
            f"or put it in {PROJECT_KEYS_DIR}/, or use --insecure to build from unverified media"
        ),
    )


# --- verification -------------------------------------------------------------------------------------


def signed_sha256(sig_text: str, name: str) -> str | None:
    """The checksum a SHA256(.sig) list gives for `name` ("SHA256 (name) = hex")."""
    m = re.search(rf"^SHA256 \({re.escape(name)}\) = ([0-9a-f]{{64}})\s*$", sig_text, re.MULTILINE)
    return m[1] if m else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_signify(iso: Path, sig: Path, key: Path, name: str) -> str:
    """Check `iso` against the signed list `sig` with `key`; return one line saying how, or raise.

    signify looks the file up by the name the list gives it, so it runs in a scratch directory where
    `name` (install7X.iso) points at the user's file, whatever that file is called.
    """
    signify = require(SIGNIFY, SIGNIFY_PACKAGE)
    with tempfile.TemporaryDirectory(prefix="ikedlab-signify-") as scratch:
        work = Path(scratch)
        (work / name).symlink_to(iso.resolve())
        shutil.copyfile(sig, work / "SHA256.sig")
        done = run([signify, "-C", "-p", key.resolve(), "-x", "SHA256.sig", name], cwd=work, check=False)
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if done.returncode == 0 and "Signature Verified" in out and f"{name}: OK" in out:
        return f"signify: {sig.name} signed by {key.name}, {name}: OK"
    if "wrong key" in out:
        raise MediaNotVerified(f"{sig} is not signed by {key} (checked against the wrong key)")
    if "signature verification failed" in out:
        raise MediaNotVerified(f"{sig} has a bad signature for {key}: it was altered or is not OpenBSD's")
    if f"{name}: FAIL" in out:
        raise MediaNotVerified(
            f"{iso} does not match the checksum OpenBSD signed (corrupt or tampered): "
            "delete it and fetch again"
        )
    last = next((line for line in reversed(out.strip().splitlines()) if line.strip()), "no output")
    raise MediaNotVerified(f"signify could not verify {iso}: {last}")


# --- download -----------------------------------------------------------------------------------------


def _urlopen(request: urllib.request.Request) -> object:
    return urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT)  # noqa: S310 - https/http only


def download(url: str, dest: Path, what: str, *, fresh: bool = False) -> Path:
    """Fetch `url` to `dest` unless it is there; resume an interrupted `dest.part` with an HTTP Range.

    `dest` appears only once complete (renamed from the .part file), so its presence means "cached".
    `fresh`: fetch it again whole (a snapshot's small lists change with every build).
    """
    if fresh:
        dest.unlink(missing_ok=True)
        dest.with_name(dest.name + ".part").unlink(missing_ok=True)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ikedlab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _urlopen(request)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part already holds every byte
            part.rename(dest)
            return dest
        raise MediaUnavailable(f"cannot download {what}: {url} answered HTTP {e.code} {e.reason}") from None
    with response as r:  # type: ignore[attr-defined]
        status = getattr(r, "status", 200)
        if status != 206:  # the server ignored the Range: start over
            offset = 0
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if offset:
            say(f"  resuming {what} at {offset >> 20} MiB")
        with part.open("ab" if offset else "wb") as f:
            done, shown = offset, -1
            while chunk := r.read(_CHUNK):
                f.write(chunk)
                done += len(chunk)
                if total:
                    tenth = done * 10 // total
                    if tenth != shown and total > 10 * _CHUNK:
                        shown = tenth
                        say(f"  {what}: {done >> 20} of {total >> 20} MiB ({tenth * 10}%)")
    if total is not None and part.stat().st_size != total:
        raise MediaUnavailable(
            f"download of {what} stopped at {part.stat().st_size} of {total} bytes; run again to resume"
        )
    part.rename(dest)
    return dest


def _no_network(release: str, url: str, reason: object) -> MediaUnavailable:
    beside = "SHA256.sig and BUILDINFO" if release == SNAPSHOTS else "SHA256.sig"
    return MediaUnavailable(
        f"cannot download OpenBSD {release} media from {url} ({reason}): pass --iso PATH "
        f"(with its {beside} beside it) or use --platform linux"
    )


# --- the entry point ----------------------------------------------------------------------------------


def fetch_media(
    release: str,
    arch: str = "amd64",
    mirror: str | None = None,
    iso: Path | str | None = None,
    cache_dir: Path | str | None = None,
    *,
    sig: Path | str | None = None,
    signify_key: Path | str | None = None,
    insecure: bool = False,
) -> Media:
    """OpenBSD `release`'s install ISO (or the current snapshot's), verified with signify.

    Without `iso`, installNN.iso and SHA256.sig are downloaded from `mirror` (OpenBSD's CDN by default)
    into the cache (openbsd/<release>/<arch>/), resuming partial downloads. With `iso`, that file is used
    and its SHA256.sig is `sig` or the one beside it. Unverifiable media (no SHA256.sig, no key) is
    refused unless `insecure`; media that fails verification is refused always. For "snapshots" the
    signed list is fetched again each time (it changes with every build) and BUILDINFO with it.
    """
    check_release_or_snapshots(release)
    if release == SNAPSHOTS:
        return _fetch_snapshot(arch, mirror, iso, cache_dir, sig, signify_key, insecure)
    plan = media_plan(release, mirror, arch)
    key = find_signify_key(release, signify_key)

    if iso is not None:
        if key is None and not insecure:
            raise _missing_key(release)
        iso_path, sig_path = _local_media(iso, sig, release, arch, insecure)
    else:
        where = openbsd_cache_dir(cache_dir) / release / arch
        with step(f"Fetching OpenBSD {release}/{arch} install media"):
            try:
                # The small signature list first: offline, this is where it shows, in a second.
                sig_path = download(plan.sig_url, where / "SHA256.sig", "SHA256.sig")
                if key is None and not insecure:
                    raise _missing_key(release)  # before downloading 800 MB that could not be trusted
                iso_path = download(plan.iso_url, where / plan.iso, plan.iso)
            except urllib.error.URLError as e:  # HTTPError is handled inside download()
                raise _no_network(release, plan.base_url, e.reason) from None
            except (TimeoutError, ConnectionError) as e:
                raise _no_network(release, plan.base_url, e) from None
    return _verified(iso_path, sig_path, key, plan, Media(iso_path, False, "", "", release, arch, release))


def _local_media(
    iso: Path | str, sig: Path | str | None, release: str, arch: str, insecure: bool
) -> tuple[Path, Path | None]:
    """The user's ISO and its SHA256.sig (`sig`, else the one beside it); None for the list if insecure."""
    iso_path = Path(iso).expanduser()
    if not iso_path.is_file():
        raise ImageError(f"--iso {iso_path}: no such file")
    sig_path: Path | None = Path(sig).expanduser() if sig else iso_path.parent / "SHA256.sig"
    if sig_path is not None and not sig_path.is_file():
        if not insecure:
            raise MediaNotVerified(
                f"no SHA256.sig for {iso_path}: put OpenBSD's SHA256.sig for {release}/{arch} beside it "
                "or pass --sig PATH (or --insecure to use it unverified)"
            )
        sig_path = None
    return iso_path, sig_path


def _verified(
    iso_path: Path, sig_path: Path | None, key: Path | None, plan: MediaPlan, media: Media
) -> Media:
    """`media` for `iso_path`, checked against the signed list with `key` (or marked unverified)."""
    if sig_path is None or key is None:
        missing = "SHA256.sig" if sig_path is None else plan.key
        how = f"NOT VERIFIED (--insecure, no {missing})"
        say(f"WARNING: using {iso_path} unverified: {how}")
        return replace(media, iso=iso_path, how=how, sha256=sha256_file(iso_path))
    with step(f"Verifying {iso_path.name} with signify"):
        how = verify_signify(iso_path, sig_path, key, plan.iso)
    digest = signed_sha256(sig_path.read_text(errors="replace"), plan.iso) or sha256_file(iso_path)
    return replace(media, iso=iso_path, verified=True, how=how, sha256=digest)


def current_snapshot(
    arch: str = "amd64", mirror: str | None = None, cache_dir: Path | str | None = None
) -> tuple[MediaPlan, Path, Path]:
    """The current snapshot's plan, signed list and BUILDINFO, fetched afresh (small files: seconds).
    Nothing here is verified yet: the list's signature is checked with the ISO's."""
    root = openbsd_cache_dir(cache_dir) / SNAPSHOTS / arch
    plan = media_plan(SNAPSHOTS, mirror, arch)
    with step(f"Fetching the OpenBSD -current ({SNAPSHOTS}/{arch}) list and build date"):
        try:
            sig_path = download(plan.sig_url, root / "SHA256.sig", "SHA256.sig", fresh=True)
            plan = media_plan(SNAPSHOTS, mirror, arch, sig_path.read_text(errors="replace"))
            buildinfo = download(plan.buildinfo_url, root / "BUILDINFO", "BUILDINFO", fresh=True)
        except urllib.error.URLError as e:
            raise _no_network(SNAPSHOTS, plan.base_url, e.reason) from None
        except (TimeoutError, ConnectionError) as e:
            raise _no_network(SNAPSHOTS, plan.base_url, e) from None
    return plan, sig_path, buildinfo


def _fetch_snapshot(
    arch: str,
    mirror: str | None,
    iso: Path | str | None,
    cache_dir: Path | str | None,
    sig: Path | str | None,
    signify_key: Path | str | None,
    insecure: bool,
) -> Media:
    """The current snapshot's install ISO: its version and key from the signed list, its build from
    BUILDINFO, the ISO cached per build (an older build's download is removed once a newer one is in)."""
    root = openbsd_cache_dir(cache_dir) / SNAPSHOTS / arch
    if iso is not None:
        iso_path, sig_path = _local_media(iso, sig, SNAPSHOTS, arch, insecure)
        if sig_path is None:
            raise MediaNotVerified(
                f"no SHA256.sig beside {iso_path}: a snapshot's version and key come from its signed list"
            )
        buildinfo = iso_path.parent / "BUILDINFO"
        if not buildinfo.is_file():
            raise MediaUnavailable(
                f"no BUILDINFO beside {iso_path}: the snapshot's build date names its image "
                f"(fetch it from {media_plan(SNAPSHOTS, None, arch).buildinfo_url})"
            )
        plan = media_plan(SNAPSHOTS, mirror, arch, sig_path.read_text(errors="replace"))
    else:
        plan, sig_path, buildinfo = current_snapshot(arch, mirror, cache_dir)
    sig_text = sig_path.read_text(errors="replace")
    key = find_signify_key(plan.version, signify_key)
    if key is None and not insecure:
        raise _missing_key(plan.version)
    if (m := _SIG_KEY.search(sig_text)) and m[1] != plan.key:
        raise MediaNotVerified(f"{sig_path} says it is signed by {m[1]}, not {plan.key}: not a snapshot list")
    if key is not None and signed_sha256(sig_text, "BUILDINFO"):
        verify_signify(buildinfo, sig_path, key, "BUILDINFO")  # the name comes from a signed file
    build = snapshot_build(buildinfo.read_text(errors="replace"))
    if iso is None:
        where = root / build
        try:
            iso_path = download(plan.iso_url, where / plan.iso, f"{plan.iso} (snapshot {build})")
        except urllib.error.URLError as e:
            raise _no_network(SNAPSHOTS, plan.base_url, e.reason) from None
        except (TimeoutError, ConnectionError) as e:
            raise _no_network(SNAPSHOTS, plan.base_url, e) from None
        for older in root.iterdir():  # one snapshot's ISO at a time: 800 MB each
            if older.is_dir() and older.name != build:
                shutil.rmtree(older, ignore_errors=True)
    media = Media(iso_path, False, "", "", SNAPSHOTS, arch, plan.version, build)
    return _verified(iso_path, sig_path, key, plan, media)


__all__ = [
    "DEFAULT_MIRROR",
    "SNAPSHOTS",
    "SUPPORTED_RELEASES",
    "Media",
    "MediaPlan",
    "MediaNotVerified",
    "MediaUnavailable",
    "cache_root",
    "download",
    "current_snapshot",
    "fetch_media",
    "find_signify_key",
    "media_plan",
    "next_release",
    "snapshot_build",
    "openbsd_cache_dir",
    "verify_signify",
]
