"""State and cache folders only their owner touches; files never opened through a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import ownership, private
from lab.errors import IkedlabError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
NOBODY = 65534


def test_a_new_state_folder_is_made_private_and_nothing_is_made_before_the_first_write(tmp_path: Path):
    target = tmp_path / "state" / "ikedlab"
    assert private.folder(target, "state folder (IKEDLAB_STATE_DIR)") == target
    assert not target.exists()  # a refused command creates nothing
    target.mkdir(parents=True, mode=0o755)
    target.chmod(0o755)
    private.folder(target, "state folder (IKEDLAB_STATE_DIR)")
    assert target.stat().st_mode & 0o777 == 0o700  # ours: tightened, not refused


def test_a_folder_others_can_write_is_refused_in_one_line(tmp_path: Path):
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o777)
    with pytest.raises(private.UnsafePathError) as err:
        private.folder(target, "state folder (XDG_STATE_HOME)")
    assert str(err.value) == (
        f"state folder (XDG_STATE_HOME) {target} is writable by others (mode 0777): "
        "ikedlab keeps keys and snapshots there and refuses it"
    )
    inner = target / "ikedlab"  # a folder not made yet, under one others can write: refused all the same
    with pytest.raises(private.UnsafePathError, match=f"lies in {target}, which others can write to"):
        private.folder(inner, "state folder (XDG_STATE_HOME)")
    assert not inner.exists()


@needs_root
def test_a_folder_of_another_user_is_refused_in_one_line(tmp_path: Path):
    home = tmp_path / "home-of-someone"  # what `sudo -E` leaves in HOME
    (home / ".local" / "state" / "ikedlab").mkdir(parents=True)
    for path in (home, *home.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    with pytest.raises(private.UnsafePathError) as err:
        private.folder(home / ".local" / "state" / "ikedlab", "state folder (HOME)")
    assert str(err.value).startswith(f"state folder (HOME) {home}/.local/state/ikedlab is owned by ")
    with pytest.raises(private.UnsafePathError, match=f"lies in {home}, which is owned by "):
        private.folder(home / ".cache" / "ikedlab", "cache folder (HOME)")
    assert not (home / ".cache").exists()


def test_a_lock_file_replaced_by_a_link_is_refused_and_its_target_untouched(tmp_path: Path):
    run_dir = tmp_path / "labs" / "x"
    run_dir.mkdir(parents=True)
    victim = tmp_path / "shadow"
    victim.write_text("root:secret:\n")
    (run_dir / ownership.LOCK_FILE).symlink_to(victim)
    with pytest.raises(IkedlabError) as err:
        ownership.claim("x", run_dir)
    assert str(err.value).startswith(f"{run_dir / ownership.LOCK_FILE} is a symbolic link (to {victim})")
    assert victim.read_text() == "root:secret:\n"
    assert ownership.previous_owner(run_dir) is None  # nor read through


def test_private_files_are_0600_whatever_the_umask(tmp_path: Path):
    old = os.umask(0)
    try:
        private.write_text(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o600
