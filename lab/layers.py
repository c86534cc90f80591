"""How `up` brings a lab to its tunnel through the layers of warm state, fastest first (lab/lab.py chooses):

- `restored`: the provisioned snapshot, when every input matches (lab/warm.py): a restore and a proof;
- `from_base`: the booted base, when only what lies above it changed (lab/base.py): a restore, then the IKE
  daemon's part of provisioning;
- `cold`: boot and provision, saving the booted base on the way and the provisioned snapshot at the end.

Each save is proven by bringing the lab back from it at once, not in the background: saving pauses every
guest and hands back new consoles, which would cut into a learner's session, and a later cut could hold
their changes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

from lab import base, progress, snapshot, warm
from lab.blueprint import Blueprint, UpRequest
from lab.errors import IkedlabError, SnapshotNotSaved
from lab.guests import Guests
from lab.host import Host
from lab.parallel import in_parallel
from lab.provision import provision, provision_base, provision_daemon


class Lab(Protocol):
    """What the layers need of the lab coming up (lab/lab.py's Lab)."""

    name: str
    guests: Guests
    blueprint: Blueprint | None

    @property
    def hosts(self) -> dict[str, Host]: ...

    def verify(self, timeout: float = ..., resumed: bool = False) -> None: ...

    def save_snapshot(self, inputs: snapshot.Inputs) -> snapshot.Snapshot: ...


def restored(lab: Lab, snap: snapshot.Snapshot) -> float | None:
    """Restore `snap` and prove the lab healthy: the seconds it took. On any failure say why in one line,
    remove what was started, and return None (the caller goes a layer down)."""
    started = time.monotonic()
    try:
        warm.restore(lab.guests, snap)
        lab.verify(resumed=True)
    except IkedlabError as e:
        progress.say(f"  warm snapshot {snap.key[:12]} of lab '{lab.name}' not used: {e.message}")
        lab.guests.remove()
        return None
    return time.monotonic() - started


def from_base(
    lab: Lab, found: snapshot.Snapshot, request: UpRequest, inputs: snapshot.Inputs | None
) -> float | None:
    """Restore the booted base, then provision only the daemon's part: the seconds to the tunnel. None
    (said in one line, guests removed) when the base does not come back; the caller boots cold. The
    provisioned snapshot is saved after it only when asked (`request.save_after_base`)."""
    started = time.monotonic()
    try:
        warm.restore(lab.guests, found)
    except IkedlabError as e:
        progress.say(f"  booted base {found.key[:12]} of lab '{lab.name}' not used: {e.message}")
        lab.guests.remove()
        return None
    if not shells_back(lab):
        return None
    daemon(lab, request)
    seconds = time.monotonic() - started
    if inputs and request.save_after_base and not saved_and_restored(lab, inputs):
        progress.say("  from the booted base again, without a warm snapshot")
        return from_base(lab, found, dataclasses.replace(request, save_after_base=False), None)
    return seconds


def cold(lab: Lab, request: UpRequest, inputs: snapshot.Inputs | None, below: snapshot.Inputs | None) -> None:
    """Boot and provision; save the booted base on the way and the provisioned snapshot at the end (when
    `request.save_snapshot`; each only for a lab that ever restores it: `below`, `inputs`)."""
    assert lab.blueprint
    blueprint = lab.blueprint
    lab.guests.boot(blueprint.specs)
    provision_base(blueprint.plan, lab.hosts)
    if request.save_snapshot and below and not based(lab, below):
        progress.say("  cold boot again, without a booted base")
        lab.guests.boot(blueprint.specs)
        provision_base(blueprint.plan, lab.hosts)
    daemon(lab, request)
    if inputs and request.save_snapshot and not saved_and_restored(lab, inputs):
        progress.say("  cold boot again, without a warm snapshot")
        lab.guests.boot(blueprint.specs)
        provision(blueprint.plan, lab.hosts, request.tunnel, blueprint.daemon_files, lab.guests.deliver)


def daemon(lab: Lab, request: UpRequest) -> None:
    """The IKE daemon's part of provisioning, on guests that hold the booted base's state."""
    assert lab.blueprint
    files = lab.blueprint.daemon_files
    provision_daemon(lab.blueprint.plan, lab.hosts, request.tunnel, files, lab.guests.deliver)


def based(lab: Lab, below: snapshot.Inputs) -> bool:
    """Save the booted base and bring the guests back from it, which proves it. A save that fails hands the
    guests back as they were cut (one line says there is no base). False (said in one line, the guests
    removed, no base kept) when the guests cannot be had back."""
    assert lab.blueprint
    try:
        saved = warm.save(lab.guests, below, dict(lab.blueprint.media), name=base.name(lab.name))
    except SnapshotNotSaved as e:
        progress.say(f"  no booted base of lab '{lab.name}': saving it failed ({e.message})")
        return shells_back(lab)
    except IkedlabError as e:
        progress.say(f"  could not save the booted base of lab '{lab.name}': {e.message}")
        lab.guests.remove()
        return False
    try:
        warm.restore(lab.guests, saved)
    except IkedlabError as e:
        progress.say(f"  the booted base of lab '{lab.name}' did not come back: {e.message}")
        snapshot.discard(saved.lab)
        lab.guests.remove()
        return False
    return shells_back(lab)


def shells_back(lab: Lab) -> bool:
    """Every restored guest's shell proven by one sync line, which also sets its clock and reseeds its RNG
    (Host.prove_restored: iked must not draw the SPIs and nonces of the base's last restore); False (said,
    guests removed) otherwise."""
    try:
        with progress.step("base: every shell answers"):
            in_parallel(lab.hosts.values(), lambda h: h.prove_restored())
    except IkedlabError as e:
        progress.say(f"  lab '{lab.name}' not healthy after its booted base: {e.message}")
        lab.guests.remove()
        return False
    return True


def saved_and_restored(lab: Lab, inputs: snapshot.Inputs) -> bool:
    """Save the freshly provisioned lab and bring it back from the snapshot, which proves the snapshot.
    A save that fails hands the lab back as it was cut (warm.save), proven, with one line saying there is
    no warm snapshot and why. False (said in one line, the lab's guests removed, no snapshot kept) when
    the lab cannot be had back, from the snapshot or after a failed save."""
    try:
        saved = lab.save_snapshot(inputs)
    except SnapshotNotSaved as e:
        try:
            lab.verify(resumed=True)
        except IkedlabError as sick:
            progress.say(f"  lab '{lab.name}' not healthy after a failed snapshot save: {sick.message}")
            lab.guests.remove()
            return False
        progress.say(
            f"  no warm snapshot of lab '{lab.name}': saving it failed ({e.message}); the lab runs on "
            "as provisioned, and the next `up` boots cold"
        )
        return True
    except IkedlabError as e:
        progress.say(f"  could not save a warm snapshot of lab '{lab.name}': {e.message}")
        lab.guests.remove()
        return False
    if restored(lab, saved) is not None:
        return True
    snapshot.discard(lab.name)
    return False
