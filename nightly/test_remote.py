"""A whole lab on a libvirt host reached over a remote transport: this machine's own libvirtd through ssh to
127.0.0.1 (a private sshd on a free port, with a key made for this test only), so the code runs exactly as
against another machine. Scenarios 1-5 run on it, and no file of the lab is one of the caller's: every path
in every domain's XML lies in ikedlab's storage pool on the libvirt host (lab/volumes.py), no serial log is
written by name, QEMU runs there as that host's QEMU user (never root), and when the lab goes its volumes
go too.

Without an sshd here, libvirt's ext transport runs virt-ssh-helper, which is what ssh runs on the far side.
Minutes (a cold lab: warm snapshots stay on the libvirt host's side, not yet kept for remote labs), so
`make test-nightly` runs it inside `make nightly`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import PROJECT_ROOT, results
from lab.hypervisor import domain_name
from lab.ownership import checkout_tag
from lab.snapshot import snapshots_root
from lab.volumes import POOL_PATH, overlay_volume

SCENARIOS = ("test_1_tunnel.py", "test_2_ping.py", "test_3_enc0.py", "test_4_counters.py", "test_5_wire.py")
RUN_TIMEOUT = 3600
DOMAINS_APPEAR = 900  # seconds for the lab's domains to exist: the images uploaded, a loaded machine
SSHD_LISTENS = 20
STOPS = 180  # seconds for the scenario session to take its lab down after Ctrl-C
LAB = f"remote-{checkout_tag()}"  # per checkout: another checkout's remote lab is not this one's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SSHD_LISTENS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited ({process.returncode}) before listening on 127.0.0.1:{port}: see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port} within {SSHD_LISTENS}s: see {log}")


@pytest.fixture(scope="module")
def remote_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("ssh")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        helper = folder / "libvirt-over-pipe"
        helper.write_text("#!/bin/sh\nexec virt-ssh-helper qemu:///system\n")
        helper.chmod(0o700)
        yield f"qemu+ext:///system?command={helper}"
        return
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copyfile(folder / "client.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = folder / "sshd.log"
    process = subprocess.Popen([sshd, "-D", "-f", str(folder / "sshd_config"), "-E", str(log)])
    try:
        wait_listening(port, process, log)
        yield f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={folder / 'client'}&no_verify=1"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)  # the keys were for this test only


def qemu_user_of(name: str) -> str:
    """The user a domain's QEMU process runs as, by libvirt's pid file (the libvirt host is this machine)."""
    pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
    return subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True).stdout.strip()


def domain_files(xml: str) -> list[str]:
    """Every file a domain's XML names: boot files, disks, serial logs."""
    root = ET.fromstring(xml)
    named = [e.text or "" for e in root.iter() if e.tag in ("kernel", "initrd", "loader", "nvram")]
    named += [e.get("file", "") for e in root.iter() if e.tag in ("source", "log") and e.get("file")]
    return [n for n in named if n]


def test_a_lab_on_a_remote_libvirt_host_runs_scenarios_1_to_5(remote_uri: str, tmp_path: Path) -> None:
    import libvirt

    env = {**os.environ, "IKEDLAB_LIBVIRT_URI": remote_uri}
    junit = tmp_path / "junit.xml"
    argv = [
        sys.executable, "-m", "pytest", *(f"scenarios/{s}" for s in SCENARIOS), "-v", "--platform", "linux",
        "--lab-name", LAB, "--artifacts", str(tmp_path / "evidence"), f"--junitxml={junit}",
    ]  # fmt: skip
    with open(tmp_path / "pytest.log", "w") as log:
        run = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    conn = libvirt.open(remote_uri)
    try:
        names = [domain_name(LAB, h) for h in ("initlan", "init", "inet", "resp", "resplan")]
        xmls: dict[str, str] = {}
        deadline = time.monotonic() + DOMAINS_APPEAR
        while len(xmls) < len(names) and time.monotonic() < deadline and run.poll() is None:
            for name in names:
                if name not in xmls:
                    try:
                        xmls[name] = conn.lookupByName(name).XMLDesc(0)
                    except libvirt.libvirtError:
                        pass
            time.sleep(1)
        assert len(xmls) == len(names), (
            f"the lab's domains did not all appear on {remote_uri} within {DOMAINS_APPEAR}s "
            f"(seen: {sorted(xmls)}): see {tmp_path / 'pytest.log'}"
        )
        outside = {
            n: [f for f in domain_files(x) if not f.startswith(POOL_PATH + "/")] for n, x in xmls.items()
        }
        assert not any(outside.values()), f"files outside the libvirt host's pool: {outside}"
        # QEMU there runs as that host's QEMU user (its DAC label), not as root: the caller's uid (root
        # here) means nothing on another machine.
        labels = {n: ET.fromstring(x).findtext("seclabel[@model='dac']/label") or "" for n, x in xmls.items()}
        as_root = {n: label for n, label in labels.items() if label.partition(":")[0].lstrip("+") == "0"}
        assert not as_root, f"QEMU runs as root on the libvirt host: {as_root}"
        users = {n: qemu_user_of(n) for n in xmls}
        assert "root" not in users.values(), f"QEMU processes by user on the libvirt host: {users}"
        assert run.wait(timeout=RUN_TIMEOUT) == 0, f"scenarios 1-5 failed: see {tmp_path / 'pytest.log'}"
        rows = results.rows_of(results.SuiteFile("scenarios", "Scenarios", junit, "linux", None))
        assert {r.group for r in rows} == {f"scenarios/{s}" for s in SCENARIOS}
        assert all(r.verdict == "passed" for r in rows), [(r.case, r.verdict) for r in rows]
        assert not list(snapshots_root().glob(f"{LAB}*")), "warm state of a remote lab kept here"
        left = [d.name() for d in conn.listAllDomains() if d.name().startswith(domain_name(LAB, ""))]
        assert not left, f"domains left on the libvirt host: {left}"
        pool = conn.storagePoolLookupByName("ikedlab")
        pool.refresh(0)
        assert not [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(overlay_volume(LAB, ""))]
    finally:
        if run.poll() is None:  # as Ctrl-C: the scenario session takes its lab down (SIGTERM left it up)
            run.send_signal(signal.SIGINT)
            try:
                run.wait(timeout=STOPS)
            except subprocess.TimeoutExpired:
                run.kill()
        conn.close()
