"""OpenBSD install media: download (resumable, cached) and signify verification.

The trust anchor is a release's base public key (openbsd-7X-base.pub). OpenBSD signs each release's
SHA256 list with it; `signify -C` checks the signature and then the ISO's checksum in that list. A key is
taken, in order, from the caller (`--signify-key`), the project's `images/openbsd/keys/`, and the host's
/etc/signify. Media that cannot be verified is refused unless the caller says `insecure=True`, which the
returned Media records and the output shows.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lab import PROJECT_ROOT
from lab.command import require, run
from lab.errors import ImageError
from lab.images.cache import default_cache_dir
from lab.progress import say, step

DEFAULT_MIRROR = "https://cdn.openbsd.org/pub/OpenBSD"
IMAGES_DIR = PROJECT_ROOT / "images" / "openbsd"
PROJECT_KEYS_DIR = IMAGES_DIR / "keys"
#: Where an OpenBSD machine keeps release keys; tests point this elsewhere.
SYSTEM_KEY_DIRS: tuple[Path, ...] = (Path("/etc/signify"),)
SIGNIFY = "signify-openbsd"  # Debian's name for OpenBSD's signify(1)
SIGNIFY_PACKAGE = "signify-openbsd"

_CHUNK = 1 << 20
_HTTP_TIMEOUT = 60


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
    release: str = ""
    arch: str = "amd64"


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """ikedlab's cache: the argument, else $IKEDLAB_CACHE_DIR, $XDG_CACHE_HOME/ikedlab, ~/.cache/ikedlab."""
    return Path(cache_dir) if cache_dir else default_cache_dir()


def openbsd_cache_dir(cache_dir: Path | str | None = None) -> Path:
    return cache_root(cache_dir) / "openbsd"


def check_release(release: str) -> str:
    """'7.9' -> '79' (the file names' form); anything else is a clear error."""
    if not re.fullmatch(r"\d\.\d", release):
        raise ImageError(f"'{release}' is not an OpenBSD release (expected a version such as 7.9)")
    return release.replace(".", "")


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
        f"no signify key for OpenBSD {release} ({name}): pass --signify-key FILE",
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


def download(url: str, dest: Path, what: str) -> Path:
    """Fetch `url` to `dest` unless it is there; resume an interrupted `dest.part` with an HTTP Range.

    `dest` appears only once complete (renamed from the .part file), so its presence means "cached".
    """
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
    return MediaUnavailable(
        f"cannot download OpenBSD {release} media from {url} ({reason}): pass --iso PATH "
        "(with its SHA256.sig beside it) or use --platform linux"
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
    """OpenBSD `release`'s install ISO, verified with signify.

    Without `iso`, install7X.iso and SHA256.sig are downloaded from `mirror` (OpenBSD's CDN by default)
    into the cache (openbsd/<release>/<arch>/), resuming partial downloads. With `iso`, that file is used
    and its SHA256.sig is `sig` or the one beside it. Unverifiable media (no SHA256.sig, no key) is
    refused unless `insecure`; media that fails verification is refused always.
    """
    name = iso_name(release)
    key = find_signify_key(release, signify_key)

    if iso is not None:
        if key is None and not insecure:
            raise _missing_key(release)
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
    else:
        base = f"{(mirror or DEFAULT_MIRROR).rstrip('/')}/{release}/{arch}"
        where = openbsd_cache_dir(cache_dir) / release / arch
        with step(f"Fetching OpenBSD {release}/{arch} install media"):
            try:
                # The small signature list first: offline, this is where it shows, in a second.
                sig_path = download(f"{base}/SHA256.sig", where / "SHA256.sig", "SHA256.sig")
                if key is None and not insecure:
                    raise _missing_key(release)  # before downloading 800 MB that could not be trusted
                iso_path = download(f"{base}/{name}", where / name, name)
            except urllib.error.URLError as e:  # HTTPError is handled inside download()
                raise _no_network(release, base, e.reason) from None
            except (TimeoutError, ConnectionError) as e:
                raise _no_network(release, base, e) from None

    if sig_path is None or key is None:
        missing = "SHA256.sig" if sig_path is None else key_name(release)
        how = f"NOT VERIFIED (--insecure, no {missing})"
        say(f"WARNING: using {iso_path} unverified: {how}")
        return Media(iso_path, False, how, sha256_file(iso_path), release, arch)

    with step(f"Verifying {iso_path.name} with signify"):
        how = verify_signify(iso_path, sig_path, key, name)
    digest = signed_sha256(sig_path.read_text(errors="replace"), name) or sha256_file(iso_path)
    return Media(iso_path, True, how, digest, release, arch)


__all__ = [
    "DEFAULT_MIRROR",
    "Media",
    "MediaNotVerified",
    "MediaUnavailable",
    "cache_root",
    "download",
    "fetch_media",
    "find_signify_key",
    "openbsd_cache_dir",
    "verify_signify",
]
