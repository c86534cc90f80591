"""A restored lab lives in the present.

A guest restored from a warm snapshot resumes the clock of its save (measured: 113 s behind after a 90 s
gap; restored days later, logs and certificate checks were days in the past). `up` and `reset` set every
guest's clock from the host's as they prove its shell. Restored at least 60 s after the save, every guest
agrees with the host within 2 s.
"""

import time

from lab import snapshot

GAP_SECONDS = 60.0  # at least this long between the save and the restore
AGREE_SECONDS = 2.0


def test_every_guest_has_the_hosts_time_after_a_restore(lab):
    snap = snapshot.load(lab.name)
    assert snap is not None, f"lab '{lab.name}' has no warm snapshot to restore"
    # The snapshot's age is known exactly, so the gap is a deadline, not a guess; a snapshot from an earlier
    # run (the usual case) is old enough already.
    while (left := snap.created + GAP_SECONDS - time.time()) > 0:
        time.sleep(left)
    lab.reset()
    for host in lab.hosts.values():
        before = time.time()
        # Whole seconds: the guest's clock is somewhere in [guest, guest + 1).
        guest = int(host.check("date +%s").output.split()[-1])
        after = time.time()
        assert before - AGREE_SECONDS < guest + 1 and guest <= after + AGREE_SECONDS, (
            f"{host.name}'s clock says {guest}, the host's was {before:.0f}..{after:.0f} "
            f"({guest - before:+.0f} s) after a restore {time.time() - snap.created:.0f} s after the save"
        )
