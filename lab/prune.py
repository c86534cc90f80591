"""What checkouts that no longer exist left behind: their labs' run directories and warm snapshots.

Every clone's `make test` makes a scenario lab named after the checkout (`scn-` and six hex digits) with a
run directory and a warm snapshot of ~425 MiB, which its own next run reuses; once the clone is deleted
nothing would use them again. A lab belongs to the checkout whose ikedlab last claimed it (its owner.lock);
a snapshot to the checkout that saved it (snapshot.json), else to its lab's.

Removing one claims the lab first, so a lab a live process owns is never touched, whatever its checkout;
guests go through `Lab.down` (libvirt's ikedlab metadata, nothing else). A lab of a gone checkout whose
guests still run is left alone unless it is a scenario lab, which only its own (dead) run ever used.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import ownership, private, progress, snapshot
from lab.errors import IkedlabError, LabError, SnapshotError
from lab.lab import Lab

SCENARIO_LAB_PREFIX = "scn-"  # scenarios/conftest.py and lab.interop name their labs so


@dataclass(frozen=True)
class Leftover:
    """A lab (run directory, snapshot or both) whose checkout is gone."""

    lab: str
    checkout: str
    size: int  # bytes on disk: run directory and snapshot


def checkout_of(lab: str) -> str | None:
    """The checkout a lab belongs to: the one that saved its snapshot, else its last owner's (or None)."""
    try:
        snap = snapshot.load(lab)
    except SnapshotError:
        snap = None
    if snap and snap.checkout:
        return snap.checkout
    owner = ownership.previous_owner(private.labs_dir() / lab)
    return owner.checkout if owner else None


def is_gone(checkout: str | None) -> bool:
    """The checkout's ikedlab code is no longer where it was (None, unknown, is never gone)."""
    return checkout is not None and not (Path(checkout) / "lab").is_dir()


def leftovers() -> list[Leftover]:
    """Every lab with a run directory or a snapshot whose checkout is gone."""
    folders: list[Path] = []
    for root in (private.labs_dir(), snapshot.snapshots_root()):
        if root.is_dir():  # dot-folders are work in progress (a snapshot being written, an old bundle)
            folders += [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    found = []
    for name in sorted({snapshot.lab_of(p.name) for p in folders}):  # a lab's snapshots: its base too
        checkout = checkout_of(name)
        if checkout is not None and is_gone(checkout):
            dirs = [p for p in folders if snapshot.lab_of(p.name) == name]
            found.append(Leftover(name, checkout, sum(_size(d) for d in dirs)))
    return found


def prune(scenario_labs_only: bool = False, say: Callable[[str], None] = progress.say) -> list[Leftover]:
    """Remove the leftovers of gone checkouts (only scenario labs when `scenario_labs_only`, as a scenario
    run does by itself); say one line for each removed or left alone. Returns those removed."""
    removed = []
    for left in leftovers():
        scenario_lab = left.lab.startswith(SCENARIO_LAB_PREFIX)
        if scenario_labs_only and not scenario_lab:
            continue
        why_not = _remove(left, guests_may_go=scenario_lab)
        if why_not is None:
            removed.append(left)
            say(f"lab '{left.lab}' of {left.checkout} (gone): removed, {left.size / 2**20:.0f} MiB freed")
        elif not scenario_labs_only:  # a scenario run keeps quiet about what it does not touch
            say(f"lab '{left.lab}' of {left.checkout} (gone): left alone, {why_not}")
    return removed


def _remove(left: Leftover, guests_may_go: bool) -> str | None:
    """Claim the lab, take it down, delete its snapshot and run directory; None, or why it was left alone."""
    try:
        lab = Lab(left.lab)
    except LabError as e:
        return e.message  # not a lab name ikedlab would make: not ours to judge
    try:
        lab.claim(command="ikedlab prune")
    except LabError as e:
        return e.message.removeprefix(f"lab '{left.lab}' ")  # "is in use by pid N (...)"
    try:
        if any(d.running for d in lab.domains()) and not guests_may_go:
            return f"its guests still run: `{ownership.ikedlab_for(left.lab)} down --snapshots` removes it"
        lab.down(quiet=True)
        snapshot.remove(left.lab)
        shutil.rmtree(lab.run_dir, ignore_errors=True)
    except IkedlabError as e:
        return e.message
    finally:
        lab.close()
    return None


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0
