"""What deleted checkouts left behind: found by the checkout each lab and snapshot belongs to, removed by
`ikedlab prune` (and a scenario run, for scenario labs), never a lab a live process owns."""

import json
from pathlib import Path

import pytest

from lab import ownership, prune, snapshot
from tests.test_cli import ikedlab
from tests.test_ownership import hold

GONE = "/nonexistent/deleted-clone"


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("IKEDLAB_LIBVIRT_URI", "test:///default")  # its one domain is not ikedlab's
    return tmp_path / "state"


def a_lab(state_dir: Path, name: str, checkout: str, snapshot_too: bool = True) -> Path:
    """A lab as a finished run leaves it: run directory with its last owner, and a warm snapshot."""
    run_dir = state_dir / "labs" / name
    (run_dir / "console").mkdir(parents=True)
    (run_dir / "console" / "all.log").write_text("transcript\n")
    owner = {"pid": 1, "checkout": checkout, "command": "pytest scenarios", "since": 0.0}
    (run_dir / ownership.LOCK_FILE).write_text(json.dumps(owner))
    if snapshot_too:
        writer = snapshot.Writer(name, snapshot.Inputs({"lab name": name}))
        writer.memory_path("init").write_bytes(b"\0" * 4096)
        writer.add("init", f"ikedlab-{name}-init")
        writer.commit()
        meta = snapshot.directory(name) / snapshot.META
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "checkout": checkout}))
    return run_dir


def test_labs_and_snapshots_of_gone_checkouts_are_removed_others_kept(state_dir, capsys):
    gone = a_lab(state_dir, "scn-aaaaaa", GONE)
    mine = a_lab(state_dir, "scn-bbbbbb", ownership.CHECKOUT)
    learner = a_lab(state_dir, "default", GONE)
    assert [left.lab for left in prune.leftovers()] == ["default", "scn-aaaaaa"]

    removed = prune.prune(scenario_labs_only=True)  # what a scenario run does by itself
    assert [left.lab for left in removed] == ["scn-aaaaaa"]
    assert not gone.exists() and snapshot.load("scn-aaaaaa") is None
    assert mine.exists() and snapshot.load("scn-bbbbbb") is not None
    assert learner.exists(), "a scenario run removes scenario labs only"
    said = capsys.readouterr().err
    assert f"lab 'scn-aaaaaa' of {GONE} (gone): removed" in said

    assert [left.lab for left in prune.prune()] == ["default"]  # `ikedlab prune`: every lab of it
    assert not learner.exists() and snapshot.load("default") is None
    assert mine.exists() and prune.leftovers() == []


def test_a_lab_a_live_process_owns_is_left_alone_whatever_its_checkout(state_dir, capsys):
    run_dir = a_lab(state_dir, "scn-cccccc", GONE)
    holder = hold(run_dir, "scn-cccccc")
    try:
        lock = run_dir / ownership.LOCK_FILE  # the live owner runs code of a checkout deleted under it
        lock.write_text(json.dumps({**json.loads(lock.read_text()), "checkout": GONE}))
        assert prune.prune() == []
        assert run_dir.exists() and snapshot.load("scn-cccccc") is not None
        assert f"left alone, is in use by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_snapshot_list_names_each_checkout_and_marks_the_gone_ones(tmp_path, state_dir):
    a_lab(state_dir, "scn-aaaaaa", GONE)
    a_lab(state_dir, "scn-bbbbbb", ownership.CHECKOUT)
    env = {"IKEDLAB_LIBVIRT_URI": "test:///default"}
    listed = ikedlab("snapshot", "list", tmp_path=tmp_path, env=env).stdout.splitlines()[1:]  # budget first
    assert f"checkout {GONE} (gone)" in listed[0] and listed[0].startswith("scn-aaaaaa")
    assert f"checkout {ownership.CHECKOUT} " in listed[1] and "(gone)" not in listed[1]
    assert "`ikedlab prune` removes them" in listed[2]
    done = ikedlab("prune", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"lab 'scn-aaaaaa' of {GONE} (gone): removed" in done.stderr
    assert done.stdout == "1 lab removed, 0 MiB freed\n"
    again = ikedlab("prune", tmp_path=tmp_path, env=env)
    assert again.stdout.startswith("nothing to prune")
