"""Faults of the machine rather than of the lab: a damaged image cache, a state directory that is read-only
or full. Each is one line (or a rebuild that says why) and creates no domain."""

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
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ikedlab-fault", str(mount)], check=True)
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
