"""What a lab runs, by version: the digests of the images it boots (recorded by `up` in the run folder's
media.json), ikedlab's own version and commit, and what each guest says it runs. Bundles and reports read
them; `up --from` compares them with a bundle's."""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.host import Host

HASH_LIMIT = 256 * 1024 * 1024  # bigger boot files (a golden disk) are fingerprinted by size and time
MEDIA_FILE = "media.json"


def file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    if stat.st_size > HASH_LIMIT:
        return f"size:{stat.st_size}:mtime:{int(stat.st_mtime)}"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def media_digests(media: dict[str, Any]) -> dict[str, dict[str, str]]:
    """platform -> {kernel|initrd|disk: digest} of what the lab boots (BootMedia per platform)."""
    found: dict[str, dict[str, str]] = {}
    for platform, boot in media.items():
        paths = {
            part: Path(getattr(boot, part))
            for part in ("kernel", "initrd", "disk")
            if getattr(boot, part, None)
        }
        found[platform] = {part: file_digest(path) for part, path in paths.items()}
        # A cached image says what it was built from (the Linux appliance: its manifest's hash, which covers
        # every package version): worth more to a maintainer than a file's digest.
        for path in paths.values():
            key = read_json(path.resolve().parent / "image.json").get("key")
            if key:
                # A SHA-256 of the manifest (lab/images/manifest.py), named so: bundles pass the redactor,
                # which blanks bare long hex ("key:…" came back "key:[redacted]", and every replay said the
                # image differed here).
                found[platform]["manifest"] = f"sha256:{key}"
                break
    return found


def record_media(run_dir: Path, media: dict[str, Any], release: str | None) -> None:
    """Called by `up`: the digests of the images this lab boots, for bundles made later."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MEDIA_FILE).write_text(
        json.dumps({"release": release, "images": media_digests(media)}, indent=2)
    )


def ikedlab_version() -> dict[str, str]:
    try:
        version = metadata.version("ikedlab")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parent.parent
    commit = _git(root, "rev-parse", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return {"version": version, "commit": (commit or "unknown") + (" (modified)" if dirty else "")}


def guest_versions(host: Host) -> dict[str, str]:
    return host.platform.parse_versions(host.run(host.platform.versions_command()).output)


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def recorded_media(run_dir: Path) -> dict[str, Any]:
    """What `record_media` wrote for the lab in `run_dir` ({} when nothing)."""
    return read_json(run_dir / MEDIA_FILE)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
