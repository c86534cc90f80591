"""Warm state within a size budget (lab/budget.py) over real snapshot folders with small files: least recently
used out first, never the one just saved nor one a live process's lab holds, labs that are up last."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab import blueprint, budget, ownership, settings, snapshot
from lab.cli import main
from lab.errors import SettingsError


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def two(snap: snapshot.Snapshot) -> int:
    """A budget that holds two snapshots like `snap`, not three (sizes differ by their names' lengths)."""
    return 2 * snap.size + snap.size // 2


def used(lab: str, at: float) -> None:
    """The lab's snapshot restored at `at` (time.time())."""
    budget.mark_used(lab)
    os.utime(snapshot.directory(lab) / budget.USED, (at, at))


def saved(lab: str) -> snapshot.Snapshot:
    """A snapshot of two 100 KiB guests, as a save leaves it."""
    writer = snapshot.Writer(lab, snapshot.Inputs({"lab name": lab}))
    for host in ("init", "resp"):
        writer.memory_path(host).write_bytes(b"\0" * 100 * 1024)
        writer.add(host, f"ikedlab-{lab}-{host}")
    return writer.commit()


def test_over_budget_the_least_recently_used_goes_first_and_is_said() -> None:
    now = time.time()
    saved("a")
    saved("b")
    used("a", now + 60)  # restored after b was saved
    c = saved("c")
    said: list[str] = []
    evicted = budget.enforce(keep="c", budget=two(c), say=said.append)
    assert evicted == ["b"] and snapshot.load("b") is None
    assert snapshot.load("a") and snapshot.load("c")
    assert len(said) == 1 and said[0].startswith("  warm-state budget ")
    assert "removed the snapshot of lab 'b'" in said[0] and "last used 0 s ago" in said[0]


def test_a_labs_booted_base_goes_with_its_snapshot_and_its_use_counts() -> None:
    saved("a")
    saved(snapshot.layer_name("a", "base"))
    saved("b")
    saved(snapshot.layer_name("b", "base"))
    used(snapshot.layer_name("a", "base"), time.time() + 60)  # a started from its base after b was saved
    c = saved("c")
    said: list[str] = []
    assert budget.enforce(keep="c", budget=3 * c.size + c.size // 2, say=said.append) == ["b"]
    assert snapshot.load("b") is None and snapshot.load(snapshot.layer_name("b", "base")) is None
    assert snapshot.load("a") and snapshot.load(snapshot.layer_name("a", "base"))
    assert "removed the 2 snapshots (with its booted base) of lab 'b'" in said[0]


def test_within_budget_nothing_goes_and_unlimited_never_evicts() -> None:
    saved("a")
    saved("b")
    assert budget.enforce(keep="b", budget=10 * 2**20, say=pytest.fail) == []
    assert budget.enforce(keep="b", budget=settings.UNLIMITED, say=pytest.fail) == []
    assert budget.enforce(keep="b", budget=0, say=lambda line: None) == ["a"]  # never the one just saved
    assert snapshot.load("b") is not None


def test_a_lab_a_live_process_owns_keeps_its_snapshot(state_dir: Path) -> None:
    saved("busy")  # the least recently used
    saved("idle")
    saved("new")
    claim = ownership.claim("busy", settings.labs_dir() / "busy", "a scenario run")
    try:
        assert budget.enforce(keep="new", budget=0, say=lambda line: None) == ["idle"]
        assert snapshot.load("busy") is not None  # over budget, and kept: its owner may restore it any time
    finally:
        claim.release()
    assert not (settings.labs_dir() / "idle").exists(), "the eviction's own claim left a run directory"


def test_an_eviction_leaves_the_lab_to_the_checkout_that_last_used_it(state_dir: Path) -> None:
    saved("other")
    saved("new")
    run_dir = settings.labs_dir() / "other"
    ownership.claim("other", run_dir, "another checkout's scenario run").release()
    before = (run_dir / ownership.LOCK_FILE).read_bytes()
    assert budget.enforce(keep="new", budget=0, say=lambda line: None) == ["other"]
    # Its scenario run refuses a lab last owned by another checkout: the budget must not become that owner.
    assert (run_dir / ownership.LOCK_FILE).read_bytes() == before


def test_labs_that_are_down_go_before_labs_that_are_up() -> None:
    saved("learner")  # the least recently used, but up: its snapshot is what `reset` restores
    (settings.labs_dir() / "learner").mkdir(parents=True)
    (settings.labs_dir() / "learner" / blueprint.FILE).write_text("{}")
    saved("old")
    new = saved("new")
    assert budget.enforce(keep="new", budget=two(new), say=lambda line: None) == ["old"]
    assert snapshot.load("learner") is not None


def test_snapshot_list_shows_the_budget_and_what_it_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    saved("a")
    saved("b")
    monkeypatch.setenv("IKEDLAB_SNAPSHOT_BUDGET", "2G")
    assert main(["snapshot", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("warm state: 2 labs, 0 MiB of budget 2.0 GiB"), out[0]
    assert out[1].startswith("a ") and "used" in out[1] and out[2].startswith("b ")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("", settings.SNAPSHOT_BUDGET),
        ("4G", 4 * 2**30),
        ("900M", 900 * 2**20),
        ("2GiB", 2 * 2**30),
        ("1.5G", 3 * 2**29),
        ("123", 123),
        ("unlimited", settings.UNLIMITED),
    ],
)
def test_the_budget_setting(monkeypatch: pytest.MonkeyPatch, value: str, size: int) -> None:
    monkeypatch.setenv("IKEDLAB_SNAPSHOT_BUDGET", value)
    assert settings.snapshot_budget() == size


def test_a_budget_that_is_no_size_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IKEDLAB_SNAPSHOT_BUDGET", "lots")
    with pytest.raises(SettingsError) as err:
        settings.snapshot_budget()
    assert str(err.value) == (
        "IKEDLAB_SNAPSHOT_BUDGET=lots: expected a size such as 4G, 900M or 2GiB, or unlimited"
    )
