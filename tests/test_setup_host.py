"""scripts/setup-host.sh on a bare machine: dpkg knows none of the packages.

The script runs for real; every command with an effect on the host is a stand-in on PATH that records what
it was asked. dpkg-query behaves as it does on a machine that never had the packages (FACTS: exit 1,
"no packages found matching X"), which once stopped the script before it installed anything.
"""

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup-host.sh"

# Stand-ins: the effect each real command would have is recorded in calls.log instead.
STAND_INS = {
    # dpkg-query(1) on a bare machine: the first unknown package ends it with status 1.
    "dpkg-query": 'echo "dpkg-query: no packages found matching $3" >&2; exit 1',
    "apt-get": 'echo "apt-get $*" >>"$LOG"; [ -z "$APT_FAILS" ] || [ "$1" = update ] || exit 100',
    "getent": "exit 0",  # users and groups exist
    "pgrep": "exit 0",  # virtlogd and libvirtd run
    "virsh": "exit 0",  # libvirtd answers
    "sudo": '"$@"',
}
RECORDED = ["groupadd", "useradd", "chgrp", "chmod", "mkdir", "virtlogd", "libvirtd"]


def run_setup(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = dict(STAND_INS) | {name: f'echo "{name} $*" >>"$LOG"' for name in RECORDED}
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    log.touch()
    environment = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)} | env
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=environment, timeout=60)
    return done, log.read_text()


def test_a_bare_machine_gets_every_package_installed(tmp_path):
    done, calls = run_setup(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "apt-get update" in calls
    install = next(line for line in calls.splitlines() if " install " in line)
    for package in ("qemu-system-x86", "libvirt-daemon", "openiked", "busybox-static", "tcpdump"):
        assert f" {package}" in install
    assert "setup: installing" in done.stdout


def test_a_failed_step_is_named(tmp_path):
    done, _ = run_setup(tmp_path, APT_FAILS="1")
    assert done.returncode != 0
    assert "setup: failed while installing" in done.stderr
    assert "apt-get install" in done.stderr


def test_a_root_without_init_gets_everything_but_the_daemons(tmp_path):
    """make test-fresh runs the first command in a root file system with no init: packages, the libvirt
    user and directories, but no virtlogd/libvirtd started, and no wait for one."""
    done, calls = run_setup(tmp_path, IKEDLAB_NO_DAEMONS="1")
    assert done.returncode == 0, done.stderr
    assert "apt-get install" in calls and "mkdir -p /var/log/libvirt/qemu" in calls
    assert "virtlogd" not in calls and "libvirtd" not in calls
    assert "virtlogd and libvirtd not started" in done.stdout
