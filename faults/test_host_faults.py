"""Faults of the machine rather than of the lab: a damaged image cache, a state directory that is read-only,
full, owned by someone else, or holding a link planted in place of a lab's lock. Each is one line (or a
rebuild that says why) and creates no domain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import domains, error_line, ikedlab, lab_name

from lab.images import cached_linux_image

LAB = lab_name("s")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own (mount options are changed by the tests), unmounted however they end."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    # mode=0700: a tmpfs root is 1777 by default, and a state folder others may write is refused.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "ikedlab-fault", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@needs_root
def test_a_read_only_state_directory(tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    done = ikedlab("--name", LAB, "up", "--platform", "linux", env={"IKEDLAB_STATE_DIR": str(tmpfs)})
    assert error_line(done) == f"ikedlab: lab '{LAB}': cannot write {tmpfs / 'labs'}: Read-only file system"
    assert domains(LAB) == [] and list(tmpfs.iterdir()) == []


@needs_root
def test_a_full_state_directory(tmpfs: Path) -> None:
    with open(tmpfs / "filler", "wb") as filler:  # fill it to the last block
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    done = ikedlab("--name", LAB, "up", "--platform", "linux", env={"IKEDLAB_STATE_DIR": str(tmpfs)})
    line = error_line(done)
    assert (
        line == f"ikedlab: lab '{LAB}': cannot write {tmpfs}/labs/{LAB}/owner.lock: No space left on device"
    )
    assert domains(LAB) == [] and sorted(p.name for p in tmpfs.iterdir()) in (["filler"], ["filler", "labs"])
    assert not (tmpfs / "labs" / LAB).exists(), "the failed up left its lab directory behind"


NOBODY = 65534


@needs_root
def test_a_state_folder_of_another_user_is_refused_in_one_line(tmp_path: Path) -> None:
    """What `sudo -E` does: HOME (or XDG_STATE_HOME) still names the user's folder, and root would write its
    labs, transcripts and snapshots there, where that user could change them."""
    home = tmp_path / "alice"
    (home / ".local" / "state").mkdir(parents=True)
    for path in (home, home / ".local", home / ".local" / "state"):
        os.chown(path, NOBODY, NOBODY)
    env = {"HOME": str(home), "IKEDLAB_STATE_DIR": "", "XDG_STATE_HOME": ""}
    done = ikedlab("--name", LAB, "up", "--platform", "linux", env=env)
    assert error_line(done) == (
        f"ikedlab: state folder (HOME) {home}/.local/state/ikedlab lies in {home}, which is owned by "
        "nobody (uid 65534): ikedlab keeps keys and snapshots there and refuses it"
    )
    assert domains(LAB) == [] and not (home / ".local" / "state" / "ikedlab").exists()


def test_an_owner_lock_replaced_by_a_link_is_refused_in_one_line(state_dir: Path, tmp_path: Path) -> None:
    """A link planted in place of a lab's owner.lock: ikedlab opens it to write its pid (and truncates it);
    through the link that was any file on the machine (/etc/shadow)."""
    run_dir = state_dir / "labs" / LAB
    run_dir.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "shadow"
    victim.write_text("root:$y$secret:19000::::::\n")
    (run_dir / "owner.lock").symlink_to(victim)
    try:
        done = ikedlab("--name", LAB, "up", "--platform", "linux")
        assert error_line(done) == (
            f"ikedlab: {run_dir / 'owner.lock'} is a symbolic link (to {victim}); ikedlab never writes "
            "through one"
        )
        assert victim.read_text() == "root:$y$secret:19000::::::\n" and domains(LAB) == []
    finally:
        shutil.rmtree(run_dir)


def test_a_truncated_cached_initrd_is_rebuilt(tmp_path: Path) -> None:
    """A copy of the shared cache with its initrd cut short: the next build says so and rebuilds it."""
    shared = cached_linux_image()  # the shared cache, only read: a rebuild there would pull it from others
    if shared is None:
        pytest.skip("no Linux image in the cache yet: the scenarios build one")
    cache = tmp_path / "cache"
    source = shared.initrd.parent
    for sub in ("debs", "apt"):
        if (source.parent.parent / sub).exists():
            shutil.copytree(source.parent.parent / sub, cache / sub, symlinks=True)
    shutil.copytree(source, cache / "linux" / source.name)
    (cache / "linux" / "current").symlink_to(source.name)
    with open(cache / "linux" / source.name / "initrd.img", "r+b") as initrd:
        initrd.truncate(1000)
    done = ikedlab(
        "image", "build", "--platform", "linux", env={"IKEDLAB_CACHE_DIR": str(cache)}, timeout=600
    )
    assert done.returncode == 0, done.stderr
    damaged = [line for line in done.stderr.splitlines() if "damaged" in line]
    assert damaged == [
        f"The cached Linux image is damaged ({cache / 'linux' / source.name / 'initrd.img'} is 1000 bytes, "
        f"the build wrote {shared.initrd.stat().st_size}): rebuilding it"
    ], done.stderr
    rebuilt = (cache / "linux" / "current").resolve()
    info = json.loads((rebuilt / "image.json").read_text())
    assert (rebuilt / "initrd.img").stat().st_size == info["initrd_bytes"] > 1000
