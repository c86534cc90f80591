"""Warm snapshots without VMs: keys, staleness that names what changed, corruption, file modes, `snapshot`."""

import json
import stat
import subprocess
import sys

import pytest

from lab import snapshot
from lab.placement import load_topology
from lab.provision import tunnel_probe


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def inputs(**changes):
    values = {"lab name": "a", "topology": "t1", "files init": "f1", "provisioning code": "c1"}
    return snapshot.Inputs({**values, **changes}, {"platforms": "linux"})


def saved(lab="a", given=None, size=1000):
    writer = snapshot.Writer(lab, given or inputs())
    for host in ("init", "resp"):
        writer.memory_path(host).write_bytes(b"\0" * size)
        writer.add(host, f"ikedlab-{lab}-{host}")
    return writer.commit()


def test_the_key_covers_every_input_and_a_change_is_named():
    assert inputs().key == inputs().key
    assert inputs(topology="t2").key != inputs().key
    assert inputs(topology="t2").changed(inputs().values) == ["topology"]
    assert inputs(extra="x").changed(inputs().values) == ["extra"]


def test_a_matching_snapshot_is_used_and_its_files_are_private():
    snap = saved()
    found, why = snapshot.usable("a", inputs())
    assert found and why is None and found.key == snap.key
    for path in list(found.directory.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(found.directory.parent.stat().st_mode) == 0o700
    assert found.size >= 2000 and found.summary == {"platforms": "linux"}


def test_a_stale_snapshot_is_refused_saying_which_input_changed():
    saved()
    found, why = snapshot.usable("a", inputs(**{"files init": "f2"}))
    assert found is None and why == "snapshot of lab 'a' is stale: files init changed"


def test_a_truncated_or_missing_memory_image_is_corrupt():
    snap = saved()
    snap.memory_image("resp").write_bytes(b"\0" * 10)
    found, why = snapshot.usable("a", inputs())
    assert found is None and "corrupt: resp.save is 10 bytes, 1000 were saved" in (why or "")
    snap.memory_image("resp").unlink()
    assert "resp.save is missing" in (snapshot.usable("a", inputs())[1] or "")


def test_a_save_file_changed_after_the_save_is_never_restored():
    snap = saved()
    image = snap.memory_image("init")
    assert snap.checked(image) == image
    data = bytearray(image.read_bytes())
    data[10:30] = b"<qemu:commandline/> "  # same size: only the digest can tell
    image.write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotError, match="init.save is not the file that was saved"):
        snap.checked(image)
    image.unlink()
    (image.parent / "elsewhere").write_bytes(b"\0" * 1000)
    image.symlink_to(image.parent / "elsewhere")
    with pytest.raises(snapshot.SnapshotError, match="init.save: Too many levels of symbolic links"):
        snap.checked(image)


def test_unreadable_metadata_is_reported_not_raised():
    snap = saved()
    (snap.directory / snapshot.META).write_text("{not json")
    found, why = snapshot.usable("a", inputs())
    assert found is None and why and why.startswith("snapshot of lab 'a' is unreadable")


def test_no_snapshot_means_no_reason_to_complain():
    assert snapshot.usable("nothing", inputs()) == (None, None)


def test_a_new_snapshot_replaces_the_old_and_an_abandoned_one_leaves_nothing():
    saved(size=10)
    newer = saved(given=inputs(topology="t2"), size=20)
    assert snapshot.load("a") == newer
    writer = snapshot.Writer("a", inputs(topology="t3"))
    writer.abandon()
    assert snapshot.load("a") == newer and not writer.folder.exists()
    assert snapshot.remove("a") and snapshot.load("a") is None and not snapshot.remove("a")


def test_code_version_changes_with_provisioning_code_only(tmp_path):
    assert snapshot.code_version() == snapshot.code_version()
    assert len(snapshot.code_version()) == 64


def test_the_health_ping_goes_from_one_lan_to_the_other():
    assert tunnel_probe(load_topology(None)) == ("initlan", "10.0.2.2")


def test_snapshot_list_and_rm_from_the_command_line(state_dir):
    saved(lab="x")
    env = {"IKEDLAB_STATE_DIR": str(state_dir), "PATH": "/usr/bin:/bin", "HOME": str(state_dir)}

    def ikedlab(*args):
        return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, env=env)

    listed = ikedlab("snapshot", "list")
    budget, row = listed.stdout.splitlines()
    assert listed.returncode == 0 and budget.startswith("warm state: 1 lab, 0 MiB of budget ")
    assert row.startswith("x ") and "platforms linux" in row
    removed = ikedlab("--name", "x", "snapshot", "rm")
    assert removed.returncode == 0 and "snapshot removed" in removed.stdout
    assert ikedlab("snapshot", "list").stdout.startswith("warm state: 0 labs, 0 MiB of budget ")
    meta = json.dumps({"format": 99})
    (snapshot.directory("y")).mkdir(parents=True)
    (snapshot.directory("y") / snapshot.META).write_text(meta)
    assert "format 99" in ikedlab("snapshot", "list").stdout


def test_a_restore_keeps_its_images_in_the_cache(tmp_path):
    """Every restore marks the snapshot's image as in use (lab.warm.keep_images): a long catalogue run lives
    on restores, and another checkout's build evicted its kernel mid-run when only `up` marked it."""
    import os

    from lab.warm import keep_images

    image = tmp_path / "cache" / "linux" / "2b7b2681920937dc-18edb627f715ca22"
    image.mkdir(parents=True)
    (image / "vmlinuz").write_text("")
    os.utime(image, (1_000_000, 1_000_000))

    class Snap:  # the two things keep_images reads of a snapshot
        hosts = {"init": {}, "resp": {}}

        @staticmethod
        def booted(host: str) -> dict[str, str]:
            return {"kernel": str(image / "vmlinuz"), "identity": "x"}

    keep_images(Snap())  # type: ignore[arg-type]
    assert image.stat().st_mtime > 1_000_000
