"""Warm labs: a provisioned lab saved as one consistent cut of every guest, and brought back from it.

What a snapshot is made of (`inputs`, each input by name so a stale one says what changed), which image files
a lab boots so its snapshot stays usable (`kept_media`), the save (every guest paused first, then each one's
memory written) and the restore (every QEMU back paused, in parallel, consoles opened as each returns, then
all resumed together). lab/snapshot.py keeps the files; proving the restored lab healthy is lab/verify.py's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from lab import budget, ownership, progress, qemu_files, snapshot
from lab.blueprint import Blueprint
from lab.console import Transcript
from lab.errors import IkedlabError, SnapshotError, SnapshotNotSaved
from lab.guests import Guests
from lab.hypervisor import LabDomain, domain_xml
from lab.images import mark_in_use
from lab.parallel import in_parallel
from lab.platforms import BootMedia
from lab.progress import step


def inputs(blueprint: Blueprint, hypervisor_version: str) -> snapshot.Inputs:
    """Everything a provisioned lab is made of, each by name, so a stale snapshot says what changed: what
    lies below provisioning, then what provisioning puts on top."""
    values = {**below_provisioning(blueprint, hypervisor_version), **provisioning(blueprint)}
    media = blueprint.media
    daemons = sorted({m.daemon for m in media.values() if m.daemon})
    summary = {
        "topology": blueprint.topology.path.name,
        "platforms": ",".join(blueprint.platform_names()),
        "images": " ".join(sorted({values[f"image {h}"][:12] for h in media})),
    }
    if daemons:
        summary["IKE"] = ",".join(daemons)
    if blueprint.options.ike_conf:
        summary["own iked.conf"] = ",".join(sorted(blueprint.options.ike_conf))
    return snapshot.Inputs(values, summary)


def below_provisioning(blueprint: Blueprint, hypervisor_version: str) -> dict[str, str]:
    """Booted guests on their links: the lab's name (its domain names, ports and MACs), the topology, each
    image (the IKE daemon it carries included) and each domain."""
    values = {
        "lab name": blueprint.lab,
        "topology": snapshot.digest(blueprint.topology.source),
        "hypervisor": hypervisor_version,
    }
    for host, boot in blueprint.media.items():
        # The image's content, not where its files are: the cache's `current` link moving (another
        # checkout's build) changes no snapshot. Files only for an image whose build is not reproducible.
        values[f"image {host}"] = boot.identity or snapshot.file_identity(
            [f for f in (boot.kernel, boot.initrd, boot.disk) if f]
        )
    for spec in blueprint.specs:
        values[f"domain {spec.host}"] = snapshot.digest(domain_xml(spec))
    return values


def provisioning(blueprint: Blueprint) -> dict[str, str]:
    """What provisioning puts on booted guests: its code, the options, and every file and command of each
    host's plan (the rendered iked.conf included)."""
    options = dataclasses.replace(blueprint.options, ike_conf_sources={})  # where a file was: no matter
    values = {
        "provisioning code": snapshot.code_version(),
        "options": snapshot.digest(json.dumps(asdict(options), sort_keys=True, default=str)),
    }
    for host, plan in blueprint.plan.hosts.items():
        values[f"files {host}"] = snapshot.digest(repr(plan.actions()))
    for host, boot in blueprint.media.items():
        if boot.build:  # a local iked build, put over the image's once the guest runs: the tree's digest
            values[f"iked build {host}"] = boot.build.name
    return values


def kept_media(lab: str, media: dict[str, BootMedia]) -> dict[str, BootMedia]:
    """Each host boots the image files its lab's snapshot booted, while they exist and hold the same image
    (same identity): the saved domains name those files, and another checkout's build of the same image
    into a new cache folder must neither make the snapshot stale nor take its files away."""
    try:
        snap = snapshot.load(lab)
    except SnapshotError:
        return media  # said, and booted cold, by `up`
    if snap is None:
        return media
    kept = dict(media)
    for host, boot in media.items():
        booted = snap.booted(host)
        if not boot.identity or booted.get("identity") != boot.identity:
            continue
        files = {k: Path(booted[k]) if booted.get(k) else None for k in ("kernel", "initrd", "disk")}
        if any((getattr(boot, k) is None) != (f is None) for k, f in files.items()):
            continue
        if all(f.is_file() for f in files.values() if f):
            kept[host] = dataclasses.replace(
                boot, kernel=files["kernel"], initrd=files["initrd"], disk=files["disk"]
            )
            mark_in_use(next(f for f in files.values() if f))
    return kept


def boot_record(boot: BootMedia | None) -> dict[str, str]:
    """The image files a host booted and the image's identity, for its snapshot entry."""
    if boot is None:
        return {}
    files = {"kernel": boot.kernel, "initrd": boot.initrd, "disk": boot.disk}
    return {**{k: str(f) for k, f in files.items() if f}, "identity": boot.identity}


def save(
    guests: Guests, inputs: snapshot.Inputs, media: dict[str, BootMedia], name: str | None = None
) -> snapshot.Snapshot:
    """Save the running lab as one consistent cut: every guest paused first, then each one's memory
    (and OpenBSD's disk overlay) written, as snapshot `name` (the lab's own unless told: its booted base is
    another). The guests stop; `restore` brings them back.

    When saving fails (a full disk), the guests come back as they were cut, without a snapshot: those
    already saved from their files, the others resumed, every console opened anew; then SnapshotNotSaved
    says why (the caller proves the shells). Booting the lab a second time cost a whole cold `up`."""
    hv = guests.hypervisor
    domains = hv.domains(guests.name)
    with step(f"snapshot: {len(domains)} guests paused together, memory saved"):
        quiesce = [h for h in guests.hosts.values() if h.platform.before_snapshot_command()]
        in_parallel(quiesce, lambda h: h.run(h.platform.before_snapshot_command() or "true"))
        for host in guests.hosts.values():
            host.console.close()  # and its channel lock: a restored QEMU has new ptys, opened anew
        for d in domains:
            hv.suspend(d.name)
        name = name or guests.name
        writer = snapshot.Writer(name, inputs)
        written: list[str] = []  # hosts whose memory is written: their QEMU has stopped

        def save_one(d: LabDomain) -> None:
            hv.save(d.name, writer.memory_path(d.host))
            written.append(d.host)

        try:
            in_parallel(domains, save_one)
            for d in domains:
                disk = qemu_files.overlay(guests.name, guests.run_dir, d.host)
                writer.add(d.host, d.name, disk if disk.exists() else None, boot_record(media.get(d.host)))
            saved = writer.commit()
        except (IkedlabError, OSError) as e:
            why = e.message if isinstance(e, IkedlabError) else f"{e.filename}: {e.strerror}"
            try:
                _back_as_cut(guests, [d.host for d in domains], {h: writer.memory_path(h) for h in written})
            finally:
                writer.abandon()
            raise SnapshotNotSaved(why) from None
        except BaseException:
            writer.abandon()
            raise
    budget.enforce(keep=guests.name)  # other labs' warm state out, least recently used first, if over budget
    return saved


def _back_as_cut(guests: Guests, hosts: list[str], saved: dict[str, Path]) -> None:
    """After a failed save: each guest back from the memory already written (`saved`, by host) or, still
    paused, as it is; consoles opened, then every guest resumed together."""
    for host in hosts:
        if host in saved:
            guests.hypervisor.restore(saved[host])
        guests.open_control_console(host)
    guests.start_consoles(hosts, opened=True)


def keep_images(snap: snapshot.Snapshot) -> None:
    """Mark the images `snap` boots as in use, so no other checkout's build evicts one from the cache while
    this lab lives on restores. Only `up` marked them before: a catalogue run restores for half an hour, and
    its snapshot's kernel vanished mid-run ("could not open kernel file …/vmlinuz", twice in one day)."""
    for host in snap.hosts:
        booted = snap.booted(host)
        first = next((booted[k] for k in ("kernel", "initrd", "disk") if booted.get(k)), None)
        if first:
            mark_in_use(Path(first))


def restore(guests: Guests, snap: snapshot.Snapshot) -> None:
    """Every guest of `snap` back, paused, in parallel, its console opened as it returns; then all resumed
    together."""
    hv = guests.hypervisor
    run_dir = guests.run_dir
    hosts = list(snap.hosts)
    budget.mark_used(snap.lab)
    keep_images(snap)
    (run_dir / "serial").mkdir(parents=True, exist_ok=True)  # the saved XML logs serial there
    (run_dir / "impairments.json").unlink(missing_ok=True)  # the links are as they were saved
    for host in hosts:
        disk = snap.disk(host)
        if disk:  # a saved image holds RAM only: the disk must be as it was at the cut
            target = qemu_files.overlay(guests.name, run_dir, host)
            user = hv.qemu_user()
            qemu_files.ready_overlay_folder(target, user)
            shutil.copyfile(snap.checked(disk), target)
            qemu_files.reachable(target, user, writable=True)
    took: dict[str, float] = {}

    guests.transcript = guests.transcript or Transcript(run_dir / "console")  # before the threads

    checked: dict[str, float] = {}

    def back(host: str) -> None:
        started = time.monotonic()
        image = snap.checked(snap.memory_image(host))  # its domain XML is what libvirt will run, as root
        checked[host] = time.monotonic() - started
        started = time.monotonic()
        hv.restore(image)
        took[host] = time.monotonic() - started
        guests.open_control_console(host)  # connecting while the other guests are still restored

    with step(f"restore: {len(hosts)} guests from warm snapshot {snap.key[:12]}, in parallel, paused"):
        in_parallel(hosts, back)
    slowest = max(checked, key=lambda h: checked[h])
    progress.record(
        f"restore: save files checked against their SHA-256 (slowest: {slowest})", checked[slowest]
    )
    for host in hosts:
        progress.record(f"restore: libvirt restore of {host}", took[host])
    with step("restore: guests resumed together"):
        guests.start_consoles(hosts, opened=True)


def own_snapshot(lab: str, snapshot_key: str) -> snapshot.Snapshot:
    """Lab `lab`'s snapshot, taken of exactly the state it came up in (`snapshot_key`); SnapshotError
    otherwise."""
    snap = snapshot.load(lab)
    again = ownership.ikedlab_for(lab)
    if snap is None or snap.key != snapshot_key:
        raise SnapshotError(
            f"lab '{lab}' has no snapshot of the state it came up in",
            f"`{again} down` then `{again} up` (a cold up saves one)",
        )
    why = snap.problem()
    if why:
        raise SnapshotError(
            f"snapshot of lab '{lab}' is corrupt: {why}", f"`{again} down` then `{again} up --cold`"
        )
    return snap
