"""The booted base's restore (lab/layers.py): every restored guest proves its shell the way a restored
provisioned snapshot does, with the sync line that sets its clock and reseeds its RNG. Restored by a plain
attach, iked on a base restored twice drew the same SPIs and nonces (the RNG state of the base's save)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab import layers
from lab.errors import IkedlabError


@dataclass
class FakeHost:
    name: str
    fails: bool = False
    proven: int = 0

    def prove_restored(self) -> None:
        self.proven += 1
        if self.fails:
            raise IkedlabError(f"{self.name}: no shell")


@dataclass
class FakeGuests:
    removed: bool = False

    def remove(self) -> None:
        self.removed = True


@dataclass
class FakeLab:
    hosts: dict[str, FakeHost]
    name: str = "base-test"
    guests: FakeGuests = field(default_factory=FakeGuests)


def test_every_guest_restored_from_the_base_is_proven_with_the_reseeding_sync_line():
    lab = FakeLab({n: FakeHost(n) for n in ("init", "resp", "initlan")})
    assert layers.shells_back(lab)  # type: ignore[arg-type]
    assert {h.name: h.proven for h in lab.hosts.values()} == {"init": 1, "resp": 1, "initlan": 1}
    assert not lab.guests.removed


def test_a_guest_whose_shell_does_not_come_back_removes_the_guests(capsys):
    lab = FakeLab({"init": FakeHost("init"), "resp": FakeHost("resp", fails=True)})
    assert not layers.shells_back(lab)  # type: ignore[arg-type]
    assert lab.guests.removed
    said = capsys.readouterr()
    assert "resp: no shell" in said.out + said.err
