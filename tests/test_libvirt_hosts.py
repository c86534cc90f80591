"""Remote libvirt hosts without a daemon: which URIs are remote, the hosts file for -n N, volume names."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import HypervisorError, InputError
from lab.libvirt_hosts import check_uri, for_worker, is_remote, load_hosts
from lab.volumes import POOL_PATH, content_name


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("qemu:///system", False),
        ("qemu+unix:///system", False),
        ("qemu+ssh://root@lab2/system", True),
        ("qemu+ssh://root@127.0.0.1:2222/system?keyfile=/k&no_verify=1", True),
        ("qemu+tcp://localhost/system", True),
        ("qemu+ext:///system?command=/usr/local/bin/helper", True),
        ("qemu://lab2/system", True),  # a host name: libvirt's default transport to it (TLS)
    ],
)
def test_a_transport_or_a_host_name_means_a_daemon_that_may_not_see_our_files(uri: str, remote: bool) -> None:
    assert is_remote(uri) is remote and check_uri(uri, "x") == uri


def test_a_hosts_file_spreads_workers_round_its_hosts(tmp_path: Path) -> None:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - qemu:///system\n  - qemu+ssh://root@lab2/system\n")
    hosts = load_hosts(tmp_path / "hosts.yaml")
    assert [for_worker(hosts, w) for w in ("", "gw0", "gw1", "gw2")] == [
        hosts[0],
        hosts[0],
        hosts[1],
        hosts[0],
    ]


def test_every_bad_entry_of_a_hosts_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "hosts.yaml").write_text(
        'hosts:\n  - qemu:///system\n  - "qemu+ssh://h/system; rm -rf /"\n  - http://h/\n  - 3\n'
    )
    with pytest.raises(InputError) as info:
        load_hosts(tmp_path / "hosts.yaml")
    assert [p.split(": ")[1] for p in info.value.problems] == ["hosts[1]", "hosts[2]", "hosts[3]"]
    assert "expected a libvirt QEMU URI such as qemu+ssh://host/system" in info.value.problems[0]
    (tmp_path / "empty.yaml").write_text("hosts: []\n")
    with pytest.raises(InputError, match=r"empty\.yaml: hosts: expected a list of libvirt URIs"):
        load_hosts(tmp_path / "empty.yaml")


def test_a_boot_file_becomes_a_volume_named_by_its_content(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vmlinuz").write_bytes(b"kernel one")
    (tmp_path / "vmlinuz").write_bytes(b"kernel one")
    assert content_name(tmp_path / "a" / "vmlinuz") == content_name(tmp_path / "vmlinuz")
    assert content_name(tmp_path / "vmlinuz").endswith("-vmlinuz")
    (tmp_path / "vmlinuz").write_bytes(b"kernel two")
    assert content_name(tmp_path / "a" / "vmlinuz") != content_name(tmp_path / "vmlinuz")


class PoolOfOurs:
    """Stands in for lab.volumes.Volumes (ikedlab's own API, not libvirt's): each upload is a path in the
    pool named as Volumes names it, and what was asked is recorded."""

    def __init__(self) -> None:
        self.uploaded: list[Path] = []
        self.overlays: list[tuple[str, str]] = []
        self.overlay_users: list[object] = []

    def upload(self, path: Path) -> str:
        self.uploaded.append(path)
        return f"{POOL_PATH}/{content_name(path)}"

    def overlay(self, name: str, backing: str, user: object) -> str:
        self.overlays.append((name, backing))
        self.overlay_users.append(user)
        return f"{POOL_PATH}/{name}"


def test_a_remote_hosts_domain_names_only_files_in_ikedlabs_pool(tmp_path: Path) -> None:
    import dataclasses
    import xml.etree.ElementTree as ET

    from lab.hypervisor import DomainSpec, domain_xml
    from lab.qemu_files import QemuUser
    from lab.volumes import on_libvirt_host

    for name in ("vmlinuz", "initrd.img", "golden.qcow2"):
        (tmp_path / name).write_bytes(name.encode())
    spec = DomainSpec(
        "lab1", "init", "openbsd", "qemu", tmp_path / "serial" / "init.log", (),
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img",
        disk=tmp_path / "disks" / "init.qcow2", backing=tmp_path / "golden.qcow2",
    )  # fmt: skip
    pool = PoolOfOurs()
    qemu = QemuUser(64055, 994)  # that host's libvirt-qemu, from its DAC label
    remote = on_libvirt_host(spec, pool, qemu)  # type: ignore[arg-type]
    root = ET.fromstring(domain_xml(remote))
    named = [root.findtext("os/kernel"), root.findtext("os/initrd")]
    named += [e.get("file") for e in root.iter() if e.get("file")]
    assert named and all(str(n).startswith(POOL_PATH + "/") for n in named), named
    assert root.find("devices/serial/log") is None  # no serial log by name on that host
    assert pool.overlays == [("lab1.init.qcow2", f"{POOL_PATH}/{content_name(tmp_path / 'golden.qcow2')}")]
    assert pool.overlay_users == [qemu]  # the guest's disk is its QEMU's alone there
    assert root.findtext("seclabel/label") == "+64055:+994"  # QEMU runs as that host's QEMU user, not root
    local = ET.fromstring(domain_xml(spec))
    assert local.find("devices/serial/log").get("file") == str(tmp_path / "serial" / "init.log")
    assert dataclasses.replace(remote, serial_logs=True).serial_logs


def test_qemu_on_a_remote_system_libvirt_is_that_hosts_qemu_user_whoever_calls() -> None:
    from lab import qemu_files

    remote = "qemu+ssh://root@lab-host.example/system"
    assert qemu_files.labelled(remote)
    assert qemu_files.from_baselabel("+64055:+994", remote) == qemu_files.QemuUser(64055, 994)
    with pytest.raises(HypervisorError, match="libvirt is set to run QEMU as root"):
        qemu_files.from_baselabel("+0:+0", remote)
    assert not qemu_files.labelled("qemu+ssh://me@lab-host.example/session")  # runs as that user there
