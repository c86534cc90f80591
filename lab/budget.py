"""Warm state within a size budget: least recently used snapshots out, said in one line each.

Every lab keeps its warm snapshot (~425 MiB) until someone removes it; one afternoon left 15 of them on the
development machine (6.4 GiB) and nothing would ever have evicted one. After each save the snapshots are
brought within the budget (`settings.snapshot_budget()`, IKEDLAB_SNAPSHOT_BUDGET): the least recently used
goes first (used: saved or restored), those of labs that are down before those of labs that are up (a
blueprint in the run folder: a learner's `reset` restores the snapshot of a lab that is up), and never

- the snapshot just saved, nor
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
    """One snapshot as the budget sees it."""

    lab: str
    size: int  # bytes
    last_used: float  # time.time()

    @property
    def lab_is_up(self) -> bool:
        return (private.labs_dir() / self.lab / blueprint.FILE).exists()


def mark_used(lab: str) -> None:
    """The lab's snapshot was just used (restored): it goes to the back of the eviction queue."""
    folder = snapshot.directory(lab)
    if folder.is_dir():
        (folder / USED).touch()


def last_used(snap: snapshot.Snapshot) -> float:
    try:
        return max(snap.created, (snap.directory / USED).stat().st_mtime)
    except OSError:
        return snap.created


def held() -> list[Held]:
    """Every readable snapshot, least recently used first."""
    found = [
        Held(s.lab, s.size, last_used(s))
        for s in snapshot.all_snapshots()
        if isinstance(s, snapshot.Snapshot)
    ]
    return sorted(found, key=lambda h: h.last_used)


def describe(budget: int | None = None) -> str:
    """One line for `snapshot list`: the budget and what it holds."""
    budget = settings.snapshot_budget() if budget is None else budget
    snaps = held()
    total = sum(h.size for h in snaps)
    limit = "no budget" if budget == settings.UNLIMITED else f"budget {_size(budget)}"
    return (
        f"warm state: {len(snaps)} snapshot{'s' if len(snaps) != 1 else ''}, {_size(total)} of {limit}"
        f" (IKEDLAB_SNAPSHOT_BUDGET; least recently used out first)"
    )


def enforce(keep: str, budget: int | None = None, say: Callable[[str], None] = progress.say) -> list[str]:
    """Remove least recently used snapshots (never `keep`'s, nor a live-owned lab's) until the rest fit the
    budget; say each in one line. Returns the labs whose snapshots went."""
    budget = settings.snapshot_budget() if budget is None else budget
    if budget == settings.UNLIMITED:
        return []
    snaps = held()
    total = sum(h.size for h in snaps)
    evicted: list[str] = []
    # Labs that are down first, then labs that are up; least recently used first within each.
    for candidate in sorted((h for h in snaps if h.lab != keep), key=lambda h: (h.lab_is_up, h.last_used)):
        if total <= budget:
            break
        if _evict(candidate.lab):
            total -= candidate.size
            evicted.append(candidate.lab)
            ago = age(time.time() - candidate.last_used)
            say(
                f"  warm-state budget {_size(budget)}: removed the snapshot of lab '{candidate.lab}'"
                f" ({_size(candidate.size)}, last used {ago} ago); {_size(total)} held"
            )
    return evicted


def _evict(lab: str) -> bool:
    """Delete the lab's snapshot while holding the lab; False when a live process owns it."""
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
