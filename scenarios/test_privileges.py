"""QEMU never runs as root: a guest that breaks out of its QEMU is libvirt's unprivileged QEMU user (when
ikedlab runs as root) or the user who runs ikedlab, and libvirt's QEMU user cannot read ikedlab's state."""

import os
import subprocess
from pathlib import Path


def test_every_guests_qemu_runs_as_a_user_that_is_not_root(lab):
    domains = lab.domains()
    assert domains and all(d.pid for d in domains), "no QEMU process found"
    for domain in domains:
        status = Path(f"/proc/{domain.pid}/status").read_text()
        uid, gid = (
            next(line.split()[1] for line in status.splitlines() if line.startswith(f"{k}:"))
            for k in ("Uid", "Gid")
        )
        assert uid != "0", f"{domain.name}: QEMU runs as root"
        if os.geteuid() == 0:  # QEMU is libvirt's user: the lab's transcripts are out of its reach
            as_qemu = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "ls",
                str(lab.run_dir),
            ]
            assert subprocess.run(as_qemu, capture_output=True).returncode != 0, "QEMU's user reads the state"


def test_the_state_folder_is_its_users_alone(lab):
    for path in (lab.run_dir, lab.run_dir.parent.parent):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others"
