"""Evidence bundles: one archive with everything a maintainer needs to understand a lab, and to replay it.

`ikedlab bundle` packs the topology, the rendered and the user's files, each gateway's iked log, `ikectl
show sa` and the kernel's SAs and policies (in the platform's own spelling), ESP/AH counters, versions (guest
kernels and OS, iked, the boot images' digests, ikedlab's version and git commit), console transcripts,
serial logs, recent pcaps and the status table, with a README saying how to replay it. `ikedlab up --from
BUNDLE` (lab/replay.py) reads manifest.json back and boots the same lab, after saying what differs here.

Secrets: private keys never leave their guests (the bundle reads no key file), and every text that goes in
passes the redactor (lab/redact.py: SA keys, key dumps, PSKs). A bundle is made to be published, so a user's
iked.conf goes in with each PSK replaced by a placeholder (`"ikedlab-redacted-psk-1"`: the same one wherever
the same secret was, so equal and different keys stay so), and the manifest and README say it; replayed,
such a bundle runs the placeholders. `--show-secrets` makes a bundle for a maintainer one trusts: the user's
files byte for byte (a replay runs exactly them) and the SA keys in clear, marked so in its name, its README
and its manifest.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import private, redact
from lab.errors import IkedlabError
from lab.redact import scrub
from lab.versions import guest_versions, ikedlab_version, recorded_media

if TYPE_CHECKING:
    from lab.lab import Lab

FORMAT = 1
RECENT_PCAPS = 8


def describe(lab: Lab) -> dict[str, Any]:
    """What a running lab is, for reports: topology, platforms, versions of ikedlab, images and guests."""
    blueprint = lab.read()
    media = recorded_media(lab.run_dir)
    return {
        "lab": lab.name,
        "topology": str(blueprint.topology.path),
        "topology_text": blueprint.topology.source,  # what ran, whatever became of the file
        "platform": ", ".join(blueprint.platform_names()),
        "ikedlab": ikedlab_version(),
        "release": media.get("release"),
        "images": media.get("images", {}),
        "guests": {name: guest_versions(host) for name, host in lab.hosts.items()},
    }


# --- making a bundle ---------------------------------------------------------------------------------
@dataclass
class _Archive:
    """Members of the tar.gz being built, all under one top directory."""

    top: str
    tar: tarfile.TarFile
    names: list[str] = field(default_factory=list)

    def text(self, name: str, content: str) -> None:
        self.data(name, scrub(content).encode())

    def data(self, name: str, content: bytes) -> None:
        info = tarfile.TarInfo(f"{self.top}/{name}")
        info.size = len(content)
        info.mtime = int(time.time())
        info.mode = 0o600
        self.tar.addfile(info, io.BytesIO(content))
        self.names.append(name)

    def file(self, name: str, path: Path, binary: bool = False) -> None:
        if binary:
            self.data(name, path.read_bytes())
        else:
            self.text(name, path.read_text(errors="replace"))


def make_bundle(lab: Lab, out: Path | None, status_text: str = "", show_secrets: bool | None = None) -> Path:
    """Pack a running lab's evidence into `out` (default: the lab's run directory); return the path.

    `show_secrets` (default: `--show-secrets`): the user's iked.conf files byte for byte and nothing
    redacted but private keys; otherwise PSKs become placeholders (see the module's doc)."""
    show = redact.showing() if show_secrets is None else show_secrets
    blueprint = lab.read()
    own = lab.options.ike_conf  # the users' files the lab runs now (`reconfigure` included)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    top = f"ikedlab-{lab.name}-{stamp}"
    out = out or lab.run_dir / "bundles" / f"{top}{'-SECRETS' if show else ''}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    media = recorded_media(lab.run_dir)
    user = dict(sorted(own.items()))
    published, replaced = (user, 0) if show else redact.placeholders(user)
    with private.open_file(out, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        archive = _Archive(top, tar)
        archive.text("topology.yaml", blueprint.topology.source)
        for host, text in published.items():
            archive.data(f"user/{host}.iked.conf", text.encode())  # as given, or with placeholders: no scrub
        for path in sorted((lab.run_dir / "configs").glob("*")):
            archive.file(f"configs/{path.name}", path)
        for path in sorted(lab.run_dir.glob("*.json")):
            archive.file(path.name, path)
        guests = _guest_evidence(lab, archive, problems)
        for sub in ("console", "serial"):
            for path in sorted((lab.run_dir / sub).glob("*.log")):
                archive.file(f"{sub}/{path.name}", path)
        for path in sorted((lab.run_dir / "evidence").rglob("*")):  # what a failed `up` saved
            if path.is_file():
                archive.file(f"evidence/{path.relative_to(lab.run_dir / 'evidence').as_posix()}", path)
        for path in _recent_pcaps(lab.run_dir):
            archive.file(f"pcaps/{path.name}", path, binary=True)
        if status_text:
            archive.text("status.txt", status_text)
        manifest = {
            "format": FORMAT,
            "lab": lab.name,
            "created": stamp,
            "topology": "topology.yaml",
            "topology_name": blueprint.topology.path.name,
            "platforms": {host: p.name for host, p in blueprint.platforms.items()},
            "iked_conf": {host: f"user/{host}.iked.conf" for host in sorted(own)},
            # "as given": the user's files byte for byte; else how many PSKs became placeholders.
            "secrets": "as given" if show else f"{replaced} pre-shared key{'s' * (replaced != 1)} replaced",
            "expect_failure": blueprint.expect_failure,
            "release": media.get("release"),
            "images": media.get("images", {}),
            "ikedlab": ikedlab_version(),
            "guests": guests,
            "problems": problems,
        }
        archive.text("manifest.json", json.dumps(manifest, indent=2))
        archive.text("README.md", _readme(manifest, archive.names, out.name))
    if problems:
        from lab import progress

        progress.say("bundle: some evidence could not be read: " + "; ".join(problems))
    return out


def _guest_evidence(lab: Lab, archive: _Archive, problems: list[str]) -> dict[str, dict[str, str]]:
    """Per host: what it runs; per gateway: iked's log, SAs, the kernel's SAs and policies, counters."""
    versions: dict[str, dict[str, str]] = {}
    try:
        if not lab.hosts:
            lab.attach()
    except IkedlabError as e:
        problems.append(f"the guests could not be reached ({e.message})")
        return versions
    for name, host in lab.hosts.items():
        for filename, command in host.evidence_commands().items():
            try:
                result = host.run(command)
            except IkedlabError as e:
                problems.append(f"{name}: {filename}: {e.message}")
                continue
            archive.text(f"hosts/{name}/{filename}", result.output)
            if filename == "versions.txt":
                versions[name] = host.platform.parse_versions(result.output)
    return versions


def _recent_pcaps(run_dir: Path) -> list[Path]:
    pcaps = [p for sub in ("captures", "artifacts") for p in (run_dir / sub).glob("*.pcap")]
    return sorted(pcaps, key=lambda p: p.stat().st_mtime)[-RECENT_PCAPS:]


def _readme(manifest: dict[str, Any], names: list[str], archive: str) -> str:
    expect = manifest.get("expect_failure")
    replay = f"ikedlab --name replay up --from {archive}"
    lines = [
        f"# ikedlab evidence bundle: lab '{manifest['lab']}', {manifest['created']}",
        "",
        *(
            ["**This bundle holds secrets (PSKs, SA keys; made with --show-secrets): never publish it.**", ""]
            if manifest["secrets"] == "as given"
            else []
        ),
        f"Made by ikedlab {manifest['ikedlab']['version']} (commit {manifest['ikedlab']['commit']}).",
        f"Platforms: {', '.join(f'{h}={p}' for h, p in sorted(manifest['platforms'].items()))}.",
        "",
        "## Replay",
        "",
        "In an ikedlab checkout (after `make setup`), with this archive at hand:",
        "",
        "```sh",
        replay,
        "```",
        "",
        "boots the same topology on the same platforms with the same iked.conf files, and says first what",
        "differs on your machine (image digests, ikedlab version).",
    ]
    if expect:
        lines += [
            "",
            f"This lab reproduces an iked failure: `up --from` expects iked to say /{expect}/ and exits 0",
            "when it does (as `ikedlab up --expect-failure` would).",
        ]
    lines += [
        "",
        "## What is inside",
        "",
        "- `manifest.json`: platforms, user files, versions and image digests (read by `up --from`)",
        "- `topology.yaml`, `user/HOST.iked.conf` (the user's own files), `configs/` (what was installed)",
        "- `hosts/HOST/`: `versions.txt`; on gateways `iked.log`, `ikectl-show-sa.txt`, "
        "`kernel-ipsec.txt` (the kernel's SAs and policies, keys redacted), `counters.txt` (ESP/AH)",
        "- `console/` (command transcripts), `serial/` (raw serial logs), `pcaps/` (recent captures),",
        "  `evidence/` (what a failed `up` saved before its guests went)",
        "- `status.txt`: the status table when the bundle was made",
        "",
        *_secrets_note(manifest["secrets"]),
        "",
        "Files: " + ", ".join(sorted(names)),
    ]
    return "\n".join(lines) + "\n"


def _secrets_note(secrets: str) -> list[str]:
    if secrets == "as given":
        return [
            "No private key is ever included. Made with --show-secrets: the users' iked.conf files are here",
            "byte for byte (a replay runs exactly them) and SA keys are in clear, to decrypt the captures.",
        ]
    return [
        "No private key is ever included; SA keys and pre-shared keys are redacted. In `user/`, each PSK",
        f"is a placeholder ({secrets}; the same placeholder wherever the same key was), so a replay runs",
        "the same configuration with stand-in keys. Ask the reporter for a bundle made with",
        "`ikedlab bundle --show-secrets` when the exact keys matter.",
    ]
