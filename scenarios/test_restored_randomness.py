"""Restored guests draw fresh random numbers.

Every restore of a lab resumes the same saved kernel RNG state. Linux 6.1 rekeys its crng from the input
pool only when the key is old (60 s, or half the uptime in the first two minutes after boot, by clocks that
resume where they were saved), so until then each restored copy draws the same bytes: seen here, 16 bytes
of /dev/urandom on init equal after two resets, and so would be the SPIs, nonces and DH keys of an IKE
exchange started then. `up` and `reset` mix the host's randomness into every guest's RNG and rekey it on
the sync line that proves its shell. Two resets in a row: no guest draws the same bytes twice.
"""

from __future__ import annotations

DRAW = "head -c 16 /dev/urandom | od -An -tx1"


def test_no_guest_draws_the_same_random_bytes_after_two_restores(lab):
    draws: list[dict[str, str]] = []
    for _ in range(2):
        lab.reset()
        draws.append({name: " ".join(host.check(DRAW).output.split()) for name, host in lab.hosts.items()})
    repeated = sorted(name for name in draws[0] if draws[0][name] == draws[1][name])
    assert not repeated, (
        f"{', '.join(repeated)} drew the same 16 bytes of /dev/urandom right after each of two restores of "
        "one snapshot: the restored guests' RNG was not reseeded"
    )
