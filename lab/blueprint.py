"""A lab's blueprint: everything `up` decided, built once and recorded in the run folder (blueprint.json),
read back by every later command (status, exec, graph, reset, reconfigure, bundle, scenarios).

It holds the topology's validated text, not its path: editing or deleting the file after `up` changes
nothing a later command sees. Platforms are objects here and names only in the file, turned back into
objects in one place (`read`). The plan, each guest's domain and the wiring are derived from it, so they
cannot disagree with what was recorded.

What a warm snapshot is made of splits along the same line (lab/warm.py): what lies below provisioning
(images, topology, domains) and what provisioning puts on top (configuration, options, its code).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import ownership, private, redact, settings
from lab.domains import Wires, domain_specs, wires
from lab.errors import IkedlabError, LabError
from lab.hypervisor import DomainSpec
from lab.placement import parse_topology
from lab.plan import Options, Plan, build_plan
from lab.platforms import BootMedia, DaemonChoice, Platform, get_platform
from lab.render import Lifetimes, Proposals
from lab.topology import Topology

if TYPE_CHECKING:
    from lab.host import Host

FILE = "blueprint.json"
#: A running lab's changes since `up` (a gateway's iked.conf swapped by `reconfigure`): gone with `reset`.
#: The users' own text, so kept with their other files as given, in the secret folder.
SWAPPED = f"{private.SECRET_DIR}/reconfigured.json"
FORMAT = 1


@dataclass(frozen=True)
class UpRequest:
    """What `up` is asked for: by the command line, a bundle's replay, a scenario session or the bench."""

    topology: Path | None = None  # None: the guide's lab
    platform: str = settings.PLATFORM  # for hosts whose topology names none
    options: Options = field(default_factory=Options)
    release: str | None = None  # platforms that boot a cached golden image of one release (OpenBSD)
    ike_conf_files: Mapping[str, Path] = field(default_factory=dict)  # host -> a user's own iked.conf
    iked: Mapping[str, DaemonChoice] = field(default_factory=dict)  # host -> another iked than the default
    expect_failure: str | None = None  # the iked error this lab reproduces (`up --expect-failure`)
    # Waits in place of the established tunnel (`--expect-failure` waits for iked's error); such a lab is a
    # reproduction, never saved as nor restored from a warm snapshot.
    tunnel: Callable[[list[Host]], object] | None = None
    keep_on_failure: bool = False
    force: bool = False  # go ahead when another live process owns the lab
    cold: bool = False  # boot and provision even when a warm snapshot matches
    save_snapshot: bool = (
        True  # after a cold boot: the booted base on the way, the provisioned lab at the end
    )
    # After a start from the booted base, save the provisioned lab too: for a session that resets to it
    # between scenarios; a bisect step or a catalogue case runs once and does not pay for the save.
    save_after_base: bool = False

    @property
    def warm(self) -> bool:
        return self.tunnel is None


@dataclass(frozen=True)
class Blueprint:
    """A lab as `up` built it (see the module's docstring)."""

    lab: str
    run_dir: Path
    topology: Topology  # its `source` is the validated text; its `path` only names where it came from
    platforms: Mapping[str, Platform]  # host -> platform
    options: Options  # what provisioning was given
    media: Mapping[str, BootMedia]  # host -> what it boots
    accel: str  # "kvm" or "qemu"
    release: str | None = None
    expect_failure: str | None = None
    created: float = field(default_factory=time.time)
    snapshot_key: str = ""  # the inputs' digest: `reset` restores only a snapshot of exactly this lab

    @cached_property
    def plan(self) -> Plan:
        return build_plan(self.topology, self.platforms, self.options)

    @cached_property
    def wires(self) -> Wires:
        return wires(self.lab, self.topology)

    @cached_property
    def specs(self) -> list[DomainSpec]:
        """Each host's libvirt domain, in the topology's order."""
        return domain_specs(
            self.lab,
            self.run_dir,
            self.topology,
            dict(self.platforms),
            self.accel,
            dict(self.media),
            self.wires,
        )

    @property
    def daemons(self) -> dict[str, str]:
        """Gateway -> the IKE daemon it runs ("iked 7.4-1", "strongSwan 6.0.1"), for the status table."""
        return {
            g.name: self.media[g.name].daemon for g in self.topology.gateways if self.media[g.name].daemon
        }

    @property
    def daemon_files(self) -> dict[str, dict[str, Path]]:
        """Gateway -> what its IKE daemon needs that its image lacks (a local iked build's programs, by path
        in the guest), put in place once the guest runs (lab/delivery.py)."""
        from lab.images.iked_build import program_files

        return {host: program_files(m.build) for host, m in self.media.items() if m.build}

    def platform_names(self) -> list[str]:
        return sorted({p.name for p in self.platforms.values()})

    # --- the record ---------------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "lab": self.lab,
            "topology": {"file": str(self.topology.path), "text": self.topology.source},
            "platforms": {host: p.name for host, p in self.platforms.items()},
            "options": asdict(self.options),
            "media": {host: _media_record(m) for host, m in self.media.items()},
            "accel": self.accel,
            "release": self.release,
            "expect_failure": self.expect_failure,
            "created": self.created,
            "snapshot_key": self.snapshot_key,
        }

    def write(self) -> None:
        """Into the run folder, replacing any older record at once. The users' own iked.conf files are kept
        as given beside it, in the secret folder (private.SECRET_DIR): blueprint.json is evidence."""
        record = self.record()
        texts = record["options"].pop("ike_conf")
        record["options"]["ike_conf_kept"] = sorted(texts)
        secret = self.run_dir / private.SECRET_DIR
        for old in secret.glob("*.ike.conf"):
            old.unlink()  # a file of an earlier `up` of this lab is no longer the lab's
        if texts:
            secret.mkdir(mode=0o700, exist_ok=True)
        for host, text in texts.items():
            private.write_text(secret / f"{host}.ike.conf", text)
        path = self.run_dir / FILE
        partial = path.with_name(f".{FILE}.partial")
        private.write_text(partial, json.dumps(record, indent=2))
        partial.replace(path)


def read(lab: str, run_dir: Path) -> Blueprint:
    """The blueprint `up` recorded for lab `lab` in `run_dir`; LabError when the lab is not up or the record
    cannot be read (the topology in it is checked again, as any topology is)."""
    path = run_dir / FILE
    again = ownership.ikedlab_for(lab)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"lab '{lab}' is not up", f"start it with `{again} up`") from None
    except (OSError, ValueError) as e:
        raise LabError(f"{path}: unreadable ({e})", f"`{again} down` cleans it up") from None
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')}, this ikedlab reads {FORMAT}")
        topology = parse_topology(data["topology"]["text"], Path(data["topology"]["file"]))
        kept = data["options"].pop("ike_conf_kept", [])
        data["options"]["ike_conf"] = {
            host: (run_dir / private.SECRET_DIR / f"{host}.ike.conf").read_text() for host in kept
        }
        for text in data["options"]["ike_conf"].values():
            redact.register_config(text)  # this process writes nothing that holds their PSKs
        return Blueprint(
            lab=lab,
            run_dir=run_dir,
            topology=topology,
            platforms={host: get_platform(name) for host, name in data["platforms"].items()},
            options=_options(data["options"]),
            media={host: _media(m) for host, m in data["media"].items()},
            accel=data["accel"],
            release=data.get("release"),
            expect_failure=data.get("expect_failure"),
            created=float(data["created"]),
            snapshot_key=data.get("snapshot_key", ""),
        )
    except IkedlabError as e:
        raise LabError(
            f"{path}: the lab's recorded topology or platforms: {e.message}", f"`{again} down` cleans it up"
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as e:
        raise LabError(
            f"{path}: unreadable ({type(e).__name__}: {e})", f"`{again} down` cleans it up"
        ) from None


def _media_record(media: BootMedia) -> dict[str, Any]:
    # Not the judge: it judges a user's iked.conf at `up`; later commands have the guest's own iked.
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(media).items() if k != "judge"}


def _media(data: dict[str, Any]) -> BootMedia:
    def path(key: str) -> Path | None:
        return Path(data[key]) if data.get(key) else None

    return BootMedia(
        kernel=path("kernel"), initrd=path("initrd"), disk=path("disk"), cmdline=str(data.get("cmdline", "")),
        daemon=str(data.get("daemon", "")), identity=str(data.get("identity", "")),
        unverified=str(data.get("unverified", "")),
    )  # fmt: skip


def _options(data: dict[str, Any]) -> Options:
    return Options(
        peer_any=tuple(data.get("peer_any", ())),
        proposals=Proposals(**data["proposals"]) if data.get("proposals") else None,
        ike_conf=dict(data.get("ike_conf", {})),
        ike_conf_sources=dict(data.get("ike_conf_sources", {})),
        dpd_interval=data.get("dpd_interval"),
        lifetimes=Lifetimes(**data["lifetimes"]) if data.get("lifetimes") else None,
    )


def swapped(run_dir: Path) -> dict[str, str]:
    """The iked.conf files `reconfigure` put in since `up` (gateway -> text)."""
    try:
        texts = dict(json.loads((run_dir / SWAPPED).read_text()))
    except (OSError, ValueError):
        return {}
    for text in texts.values():
        redact.register_config(text)  # this process writes nothing that holds their PSKs
    return texts


def keep_swapped(run_dir: Path, host: str, text: str) -> None:
    path = run_dir / SWAPPED
    path.parent.mkdir(mode=0o700, exist_ok=True)
    private.write_text(path, json.dumps({**swapped(run_dir), host: text}, indent=2))
