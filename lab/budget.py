"""Warm state within a size budget: least recently used labs' snapshots out, said in one line each.

Every lab keeps its warm snapshot (~425 MiB) until someone removes it; one afternoon left 15 of them on the
development machine (6.4 GiB) and nothing would ever have evicted one. After each save the snapshots are
brought within the budget (`settings.snapshot_budget()`, IKEDLAB_SNAPSHOT_BUDGET), a lab's warm state at a
time (its provisioned snapshot and its booted base, lab/base.py): the least recently used lab goes first
(used: a layer saved or restored), those of labs that are down before those of labs that are up (a
blueprint in the run folder: a learner's `reset` restores the snapshot of a lab that is up), and never

- the warm state of the lab that just saved, nor
- one whose lab a live process owns (lab/ownership.py): it may be restoring it right now, or `reset` it
  between two scenarios. The lab is claimed, as `prune` claims it, for the moment its snapshot is deleted.

If what is left still exceeds the budget, so be it: the budget is a target, never a reason to break a lab.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab import blueprint, ownership, private, progress, settings, snapshot
from lab.errors import LabError

USED = "last-used"  # a file in the snapshot's folder whose modification time is the snapshot's last use


@dataclass(frozen=True)
class Held:
    """One lab's warm state as the budget sees it: its provisioned snapshot and its booted base
    (lab/base.py), which come and go together."""

    lab: str
    size: int  # bytes, every layer
    last_used: float  # time.time(): the latest use of any layer
    layers: int

    @property
    def lab_is_up(self) -> bool:
        return (private.labs_dir() / self.lab / blueprint.FILE).exists()


def mark_used(name: str) -> None:
    """The snapshot `name` was just used (restored): its lab goes to the back of the eviction queue."""
    folder = snapshot.directory(name)
    if folder.is_dir():
        (folder / USED).touch()


def last_used(snap: snapshot.Snapshot) -> float:
    try:
        return max(snap.created, (snap.directory / USED).stat().st_mtime)
    except OSError:
        return snap.created


def held() -> list[Held]:
    """Every lab's readable warm state, least recently used first."""
    by_lab: dict[str, list[snapshot.Snapshot]] = {}
    for found in snapshot.all_snapshots():
        if isinstance(found, snapshot.Snapshot):
            by_lab.setdefault(snapshot.lab_of(found.lab), []).append(found)
    labs = [
        Held(lab, sum(s.size for s in snaps), max(last_used(s) for s in snaps), len(snaps))
        for lab, snaps in by_lab.items()
    ]
    return sorted(labs, key=lambda h: h.last_used)


def describe(budget: int | None = None) -> str:
    """One line for `snapshot list`: the budget and what it holds."""
    budget = settings.snapshot_budget() if budget is None else budget
    labs = held()
    total = sum(h.size for h in labs)
    limit = "no budget" if budget == settings.UNLIMITED else f"budget {_size(budget)}"
    return (
        f"warm state: {len(labs)} lab{'s' if len(labs) != 1 else ''}, {_size(total)} of {limit}"
        f" (IKEDLAB_SNAPSHOT_BUDGET; least recently used lab out first)"
    )


def enforce(keep: str, budget: int | None = None, say: Callable[[str], None] = progress.say) -> list[str]:
    """Remove the warm state of least recently used labs (never lab `keep`'s, nor a live-owned lab's)
    until the rest fits the budget; say each in one line. Returns the labs whose warm state went."""
    budget = settings.snapshot_budget() if budget is None else budget
    if budget == settings.UNLIMITED:
        return []
    labs = held()
    total = sum(h.size for h in labs)
    evicted: list[str] = []
    # Labs that are down first, then labs that are up; least recently used first within each.
    for candidate in sorted((h for h in labs if h.lab != keep), key=lambda h: (h.lab_is_up, h.last_used)):
        if total <= budget:
            break
        if _evict(candidate.lab):
            total -= candidate.size
            evicted.append(candidate.lab)
            ago = age(time.time() - candidate.last_used)
            what = (
                "snapshot"
                if candidate.layers == 1
                else f"{candidate.layers} snapshots (with its booted base)"
            )
            say(
                f"  warm-state budget {_size(budget)}: removed the {what} of lab '{candidate.lab}'"
                f" ({_size(candidate.size)}, last used {ago} ago); {_size(total)} held"
            )
    return evicted


def _evict(lab: str) -> bool:
    """Delete the lab's warm state while holding the lab; False when a live process owns it."""
    run_dir = private.labs_dir() / lab
    created = not run_dir.exists()
    try:
        claim = ownership.claim(lab, run_dir, "ikedlab (warm-state budget)", passing=True)
    except LabError:
        return False  # in use: its owner may restore it at any moment
    try:
        snapshot.remove(lab)
    finally:
        claim.release()
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)  # the claim made it; nothing else was there
    return True


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def age(seconds: float) -> str:
    """A duration for people: 40 s, 12 min, 3 h, 2 d."""
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"
