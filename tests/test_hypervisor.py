"""Domain XML, link wiring, port and KVM decisions, and cleanup through libvirt's test driver (no QEMU)."""

import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import hypervisor
from lab.errors import HypervisorError, SettingsError
from lab.hypervisor import DomainSpec, Hypervisor, Nic, domain_xml, lab_ports, mac_address

pytest.importorskip("libvirt")


def spec(lab="t1", host="init", nics=(), **kw) -> DomainSpec:
    return DomainSpec(
        lab,
        host,
        "linux",
        "qemu",
        Path("/run/x/serial.log"),
        tuple(nics),
        kernel=Path("/k/vmlinuz"),
        initrd=Path("/k/initrd.img"),
        cmdline="console=ttyS0 ikedlab.hostname=init",
        **kw,
    )


def test_domain_xml_is_software_emulated_with_acpi_and_a_logged_serial_console():
    root = ET.fromstring(domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.find("name").text == "ikedlab-t1-init"
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("os/kernel").text == "/k/vmlinuz"
    assert root.find("os/cmdline").text.endswith("ikedlab.hostname=init")
    assert root.find("devices/serial/log").get("file") == "/run/x/serial.log"
    assert root.find("devices/rng").get("model") == "virtio"
    assert root.find("memory").text == "128"


def test_each_guest_has_a_logged_learner_console_and_a_control_channel_virtlogd_never_sees():
    serials = ET.fromstring(domain_xml(spec())).findall("devices/serial")
    assert [s.find("target").get("port") for s in serials] == ["0", "1"]
    # The control channel carries `ip xfrm state` (SA keys): only ikedlab's redacted raw log records it.
    logs = [s.find("log").get("file") if s.find("log") is not None else None for s in serials]
    assert logs == ["/run/x/serial.log", None]
    # `ikedlab console` is the first port; ikedlab's own commands use the second (libvirt alias serial1).
    hv = Hypervisor("test:///default")
    try:
        assert "--devname" not in hv.console_argv("ikedlab-t1-init", learner=True)
        control = hv.console_argv("ikedlab-t1-init")
        assert control[control.index("--devname") + 1] == "serial1"
    finally:
        hv.close()


def test_links_are_udp_sockets_on_loopback_in_pci_order():
    nics = [Nic(mac_address("t1", "init", i), 20000 + i, 21000 + i) for i in range(2)]
    root = ET.fromstring(domain_xml(spec(nics=nics)))
    interfaces = root.findall("devices/interface")
    assert [i.get("type") for i in interfaces] == ["udp", "udp"]
    for n, (iface, nic) in enumerate(zip(interfaces, nics, strict=True)):
        assert iface.find("source").attrib == {"address": "127.0.0.1", "port": str(nic.remote_port)}
        assert iface.find("source/local").attrib == {"address": "127.0.0.1", "port": str(nic.local_port)}
        assert iface.find("model").get("type") == "virtio"
        assert int(iface.find("address").get("slot"), 16) == hypervisor.NIC_SLOT0 + n
    assert not root.findall(".//interface[@type='bridge']") and not root.findall(
        ".//interface[@type='network']"
    )


def test_metadata_names_lab_and_host():
    meta = ET.fromstring(domain_xml(spec())).find("metadata")[0]
    assert meta.tag == f"{{{hypervisor.NAMESPACE}}}lab"
    assert (meta.get("name"), meta.get("host"), meta.get("platform")) == ("t1", "init", "linux")


def test_names_are_escaped_in_xml():
    xml = domain_xml(spec(host="a'<b"))
    assert ET.fromstring(xml).find("name").text == "ikedlab-t1-a'<b"


def test_ports_and_macs_derive_from_the_lab_name():
    assert lab_ports("default") == lab_ports("default")
    assert set(lab_ports("scn-gw0")).isdisjoint(lab_ports("scn-gw1"))
    assert mac_address("a", "init", 0) != mac_address("a", "init", 1) != mac_address("b", "init", 1)
    assert mac_address("a", "init", 0).startswith("52:54:00:")


def test_a_taken_port_is_refused_with_the_lab_named():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(
            HypervisorError, match=rf"UDP port {port} on 127.0.0.1 is in use, and lab 'x' needs it"
        ):
            hypervisor.check_ports_free([port], "x")


def test_accel_override_and_its_validation(monkeypatch, tmp_path):
    monkeypatch.setenv("IKEDLAB_ACCEL", "tcg")
    assert hypervisor.detect_accel(None, tmp_path).kind == "qemu"
    monkeypatch.setenv("IKEDLAB_ACCEL", "kvm")
    assert hypervisor.detect_accel(None, tmp_path).kind == "kvm"
    monkeypatch.setenv("IKEDLAB_ACCEL", "fast")
    with pytest.raises(SettingsError, match="IKEDLAB_ACCEL=fast: expected kvm or tcg"):
        hypervisor.detect_accel(None, tmp_path)


def test_without_a_probe_kernel_kvm_is_not_trusted(monkeypatch, tmp_path):
    monkeypatch.delenv("IKEDLAB_ACCEL", raising=False)
    assert hypervisor.detect_accel(None, tmp_path).kind == "qemu"


@pytest.fixture
def test_driver():
    hv = Hypervisor("test:///default")
    yield hv
    hv.close()


def test_down_removes_only_this_labs_domains(test_driver):
    test_driver.create(spec("t1", "init"), paused=False)
    test_driver.create(spec("t1", "resp"), paused=False)
    test_driver.create(spec("t2", "init"), paused=False)
    assert [d.host for d in test_driver.domains("t1")] == ["init", "resp"]
    assert test_driver.destroy_lab("t1") == ["ikedlab-t1-init", "ikedlab-t1-resp"]
    names = {d.name() for d in test_driver.conn.listAllDomains()}
    assert "test" in names, "the driver's own domain is not ours: it must stay"
    assert "ikedlab-t2-init" in names and not {"ikedlab-t1-init", "ikedlab-t1-resp"} & names
    test_driver.destroy_lab("t2")


def test_a_missing_qemu_is_one_clear_error(test_driver):
    with pytest.raises(HypervisorError, match="QEMU not found at /nonexistent/qemu"):
        test_driver.create(spec(emulator="/nonexistent/qemu"))


def test_an_unreachable_libvirtd_says_how_to_start_it():
    with pytest.raises(HypervisorError) as err:
        Hypervisor("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert str(err.value).startswith("cannot connect to libvirt at qemu+unix:///system")
    assert "make setup" in (err.value.hint or "")


def test_a_kvm_probe_that_resets_is_described_in_a_sentence():
    console = (
        "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM...\r\n"
        "Probing EDD (edd=off to disable)... ok\r\n\x1bc\x1b[?7l\x1b[2J"
    )
    assert hypervisor.probe_stopped_reason(console) == (
        "KVM is present, but the probe guest reset before its kernel started (its console's last line: "
        "'Probing EDD (edd=off to disable)... ok'): software emulation"
    )
    assert "(c)" not in hypervisor.probe_stopped_reason("\x1bc")
    assert "without a word" in hypervisor.probe_stopped_reason("\x1bc")


def test_a_slow_domain_start_names_the_kvm_permission_cause(monkeypatch):
    class Stat:
        st_gid, st_mode = 0, 0o20600

    monkeypatch.setattr(hypervisor.os, "stat", lambda path: Stat)
    reason = hypervisor.slow_start_reason(44.5)
    assert reason.startswith("starting a guest took 44s: /dev/kvm is root:600, so libvirt re-probes QEMU")
    assert "\n" not in reason and "setup-host.sh" in reason


def test_the_kvm_verdict_is_the_hosts_whichever_kernel_probed(monkeypatch, tmp_path):
    """Checkouts boot different images: a probe made with one kernel serves the next with another."""
    monkeypatch.delenv("IKEDLAB_ACCEL", raising=False)
    monkeypatch.setattr(hypervisor.os, "access", lambda path, mode: True)
    probes = []
    monkeypatch.setattr(
        hypervisor, "_probe_kvm", lambda k: probes.append(k) or hypervisor.Accel("qemu", "hung")
    )
    assert hypervisor.detect_accel(tmp_path / "a" / "vmlinuz", tmp_path).kind == "qemu"
    assert hypervisor.detect_accel(tmp_path / "b" / "vmlinuz", tmp_path).reason == "hung (cached)"
    assert probes == [tmp_path / "a" / "vmlinuz"]
