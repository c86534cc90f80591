"""Labs have owners: a live owner's lab is refused to others in one line naming it, a dead owner's is free,
and a state directory that cannot be written gives one line and leaves nothing."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab import ownership
from lab.errors import LabError
from lab.lab import Lab
from tests.test_cli import ikedlab, one_line


def hold(run_dir: Path, lab: str = "held"):
    """Another live process that owns `lab`; it prints 'held' once it does and then waits."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from lab import ownership
        ownership.claim({lab!r}, Path({str(run_dir)!r}), command="holder for the test")
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout and holder.stdout.readline().strip() == "held", "the holder never claimed the lab"
    return holder


def test_a_live_owner_is_named_and_a_dead_ones_lab_is_free(tmp_path):
    holder = hold(tmp_path / "held")
    try:
        with pytest.raises(LabError) as err:
            ownership.claim("held", tmp_path / "held")
        assert str(err.value).startswith(
            f"lab 'held' is in use by pid {holder.pid} (holder for the test, since "
        )
        assert f"checkout {ownership.CHECKOUT})" in str(err.value)
        assert err.value.hint == "wait for it, or override with `ikedlab --name held down --force`"
    finally:
        holder.kill()
        holder.wait()
    mine = ownership.claim("held", tmp_path / "held")  # its owner died: the kernel let go of the lock
    assert ownership.previous_owner(tmp_path / "held") == mine.owner
    mine.release()


def test_a_lab_folder_an_older_ikedlab_left_readable_is_made_private(tmp_path):
    old = tmp_path / "old"
    (old / "locks").mkdir(parents=True)
    (old / "locks" / "init.console").write_text("")
    (old / "media.json").write_text("{}")
    (tmp_path / "target").write_text("")
    (tmp_path / "target").chmod(0o644)
    (old / "elsewhere").symlink_to(tmp_path / "target")
    for path, mode in ((old, 0o755), (old / "locks", 0o755), (old / "locks" / "init.console", 0o644)):
        path.chmod(mode)
    (old / "media.json").chmod(0o664)
    ownership.claim("old", old).release()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (old, old / "locks", old / "locks" / "init.console")}
    assert modes == {"old": 0o700, "locks": 0o700, "init.console": 0o600}
    assert (old / "media.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "target").stat().st_mode & 0o777 == 0o644  # a link is not followed


def test_one_lab_object_claims_once(tmp_path):
    lab = Lab("mine", run_dir=tmp_path / "mine")
    lab.claim()
    lab.claim()  # again: no-op, not a conflict with itself
    with pytest.raises(LabError, match="is in use by pid"):
        Lab("mine", run_dir=tmp_path / "mine").claim()  # another holder, even in this process
    lab.close()
    Lab("mine", run_dir=tmp_path / "mine").claim()


def test_down_of_a_lab_a_live_process_owns_is_refused_and_force_overrides(tmp_path):
    env = {"IKEDLAB_LIBVIRT_URI": "test:///default"}
    holder = hold(tmp_path / "state" / "labs" / "busy", "busy")
    try:
        line = one_line(ikedlab("--name", "busy", "down", tmp_path=tmp_path, env=env))
        assert line.startswith(
            f"ikedlab: lab 'busy' is in use by pid {holder.pid} (holder for the test, since"
        )
        forced = ikedlab("--name", "busy", "down", "--force", tmp_path=tmp_path, env=env)
        assert forced.returncode == 0, forced.stderr
        assert "--force: lab 'busy' is in use by" in forced.stderr and "removed 0 domains" in forced.stderr
    finally:
        holder.kill()
        holder.wait()
    after = ikedlab("--name", "busy", "down", tmp_path=tmp_path, env=env)
    assert after.returncode == 0, after.stderr


def test_down_of_a_lab_nobody_ever_made_creates_nothing(tmp_path):
    done = ikedlab(
        "--name", "never", "down", tmp_path=tmp_path, env={"IKEDLAB_LIBVIRT_URI": "test:///default"}
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "state" / "labs" / "never").exists()


def test_a_state_directory_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(LabError) as err:
        ownership.claim("x", blocker / "labs" / "x")
    assert str(err.value) == f"lab 'x': cannot write {blocker / 'labs' / 'x'}: Not a directory"
    assert err.value.hint and "IKEDLAB_STATE_DIR" in err.value.hint
    assert blocker.read_text() == ""


def test_two_checkouts_scenario_labs_at_once(tmp_path, monkeypatch):
    """Two checkouts' scenario runs on one machine: their labs have different names and UDP ports, both are
    owned at once, and neither run may remove a lab the other left behind."""
    from lab.hypervisor import lab_ports

    first, second = (f"scn-{ownership.checkout_tag(p)}" for p in ("/src/a/ikedlab", "/src/b/ikedlab"))
    assert first != second
    assert not set(lab_ports(first)) & set(lab_ports(second))
    a, b = Lab(first, run_dir=tmp_path / first), Lab(second, run_dir=tmp_path / second)
    a.claim(only_this_checkouts=True)
    b.claim(only_this_checkouts=True)
    a.close()
    b.close()
    monkeypatch.setattr(ownership, "CHECKOUT", "/src/b/ikedlab")  # now run as the other checkout
    with pytest.raises(LabError) as err:
        Lab(first, run_dir=tmp_path / first).claim(only_this_checkouts=True)
    assert str(err.value).startswith(f"lab '{first}' was last used by pid ") and str(err.value).endswith(
        ": another checkout's lab"
    )
