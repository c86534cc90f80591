"""libvirt: domains from jinja2 templates, point-to-point UDP links, working-KVM detection, cleanup.

Every domain ikedlab creates is transient (it vanishes when it stops) and carries ikedlab metadata naming its
lab and host, so `down` and `status` find a lab's domains from libvirt itself, even when the state file is
lost, and never touch a domain ikedlab did not create.
"""

from __future__ import annotations

import grp
import hashlib
import json
import logging
import os
import re
import socket
import time
import xml.etree.ElementTree as ET
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pexpect

from lab import qemu_files, settings
from lab.command import require
from lab.errors import HypervisorError
from lab.libvirt_hosts import is_remote
from lab.ownership import ikedlab_for
from lab.volumes import Volumes, on_libvirt_host, overlay_volume

log = logging.getLogger("ikedlab.hypervisor")

NAMESPACE = "http://ikedlab.invalid/xmlns/lab/1"
DOMAIN_PREFIX = "ikedlab-"
NIC_SLOT0 = 3  # first virtio NIC's PCI slot: NIC order on the bus is interface order in the guest
PORT_BASE, PORT_SPAN, PORTS_PER_LAB = 20000, 20000, 64
KVM_PROBE_SECONDS = 20.0
SLOW_START_SECONDS = 5.0  # one domain start slower than this is worth a line saying why
CONTROL_DEVICE = "serial1"  # libvirt's alias of the second serial port: ikedlab's control channel
# A virtio serial port for files too big for a console (a local iked build): ~1.1 MiB/s into a guest under
# software emulation where the control console carries 7-23 KiB/s (both measured at load 5-9).
FILES_CHANNEL = "org.ikedlab.files"
CONSOLE_CONNECTED = r"Escape character is"  # virsh console's line once the guest's serial line is through


@dataclass(frozen=True)
class Nic:
    mac: str
    local_port: int
    remote_port: int


@dataclass(frozen=True)
class DomainSpec:
    lab: str
    host: str
    platform: str
    accel: str  # libvirt domain type: "kvm" or "qemu" (software emulation)
    serial_log: Path
    nics: tuple[Nic, ...]
    memory_mib: int = 128
    vcpus: int = 1
    tb_cache_mib: int = 32  # software emulation's translated-code cache
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    disk: Path | None = None
    backing: Path | None = None  # the golden image under `disk`, an overlay made when the guest is created
    emulator: str = "/usr/bin/qemu-system-x86_64"
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    serial_logs: bool = True  # QEMU logs the serial ports to files by name: not on a remote libvirt host

    @property
    def name(self) -> str:
        return domain_name(self.lab, self.host)


@dataclass(frozen=True)
class LabDomain:
    name: str
    lab: str
    host: str
    platform: str
    running: bool
    pid: int | None


def domain_name(lab: str, host: str) -> str:
    return f"{DOMAIN_PREFIX}{lab}-{host}"


def lab_ports(lab: str) -> range:
    """The UDP ports a lab's links use on 127.0.0.1: a block derived from the lab's name."""
    block = zlib.crc32(lab.encode()) % (PORT_SPAN // PORTS_PER_LAB)
    start = PORT_BASE + block * PORTS_PER_LAB
    return range(start, start + PORTS_PER_LAB)


def mac_address(lab: str, host: str, index: int) -> str:
    digest = hashlib.sha256(f"{lab}/{host}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def check_ports_free(ports: list[int], lab: str) -> None:
    """Refuse to start when another program (or another lab) holds one of this lab's ports."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise HypervisorError(
                    f"UDP port {port} on 127.0.0.1 is in use, and lab '{lab}' needs it for a link",
                    f"is this lab already up (`{ikedlab_for(lab)} status`), or pick another name with --name",
                ) from None


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("lab", "templates"),
    autoescape=jinja2.select_autoescape(["xml", "j2"], default_for_string=True, default=True),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def domain_xml(spec: DomainSpec) -> str:
    return _templates.get_template("domain.xml.j2").render(
        d=spec, namespace=NAMESPACE, nic_slot0=NIC_SLOT0, files_channel=FILES_CHANNEL
    )


class Hypervisor:
    """One libvirt connection. Everything ikedlab asks of libvirt goes through here."""

    def __init__(self, uri: str | None = None) -> None:
        uri = uri or settings.libvirt_uri()
        try:
            import libvirt
        except ImportError:
            raise HypervisorError(
                "libvirt-python is not installed", "run `make setup` (it creates .venv with the dependencies)"
            ) from None
        self._libvirt = libvirt
        self._qemu_user: qemu_files.QemuUser | None = None
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come back as exceptions
        self.uri = uri
        # A daemon over a transport may be another machine: nothing of ours is a file it can open.
        self.remote = is_remote(uri)
        self._volumes: Volumes | None = None
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise HypervisorError(
                f"cannot connect to libvirt at {uri}: {e.get_error_message()}",
                "start libvirtd: `make setup` (scripts/setup-host.sh) installs and starts it",
            ) from None

    def close(self) -> None:
        try:
            self.conn.close()
        except self._libvirt.libvirtError:
            pass

    @property
    def volumes(self) -> Volumes:
        """ikedlab's storage pool on the libvirt host (remote hosts: lab/volumes.py)."""
        if self._volumes is None:
            self._volumes = Volumes(self.conn, self._libvirt)
        return self._volumes

    # --- creating ------------------------------------------------------------------------------------------
    def qemu_user(self, accel: str = "qemu") -> qemu_files.QemuUser:
        """Who QEMU runs as: libvirt's unprivileged QEMU user (its DAC base label for domains of type
        `accel`) when ikedlab is root."""
        if self._qemu_user is None:
            try:
                caps = self.conn.getCapabilities() if qemu_files.labelled(self.uri) else ""
            except self._libvirt.libvirtError as e:
                message = e.get_error_message()
                raise HypervisorError(f"cannot ask libvirt for its capabilities: {message}") from None
            self._qemu_user = qemu_files.from_capabilities(caps, accel, self.uri)
        return self._qemu_user

    def create(self, spec: DomainSpec, *, paused: bool = True) -> float:
        """Start a transient domain; paused, so its console can be attached before the first byte of boot.
        Its disk overlay is made first (the golden image is never written). Here QEMU runs as libvirt's QEMU
        user and opens its files where that user can (lab/qemu_files.py). Returns how many seconds libvirt
        took."""
        if self.remote:
            spec = on_libvirt_host(spec, self.volumes, self.qemu_user(spec.accel))
        else:
            if not Path(spec.emulator).exists():
                raise HypervisorError(
                    f"QEMU not found at {spec.emulator}", "install it: apt-get install qemu-system-x86"
                )
            spec = qemu_files.for_qemu(spec, self.qemu_user(spec.accel))
            spec.serial_log.parent.mkdir(parents=True, exist_ok=True)
        flags = self._libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        started = time.monotonic()
        try:
            self.conn.createXML(domain_xml(spec), flags)
        except self._libvirt.libvirtError as e:
            raise HypervisorError(
                f"{spec.host}: libvirt could not start {spec.name}: {e.get_error_message()}"
            ) from None
        return time.monotonic() - started

    def check_ports_free(self, ports: list[int], lab: str) -> None:
        """The lab's UDP ports free here; a remote host's are its own (libvirt says when one is taken)."""
        if not self.remote:
            check_ports_free(ports, lab)

    def accel(self, probe_kernel: Path | None, cache_dir: Path) -> Accel:
        """KVM or software emulation for this host's guests (a remote host's KVM is not here to probe)."""
        return remote_accel() if self.remote else detect_accel(probe_kernel, cache_dir)

    def qemu_ids(self, name: str) -> tuple[int, int]:
        """The uid and gid a running domain's QEMU runs as on its libvirt host (its DAC label): who may write
        a file there for it."""
        try:
            xml = self.conn.lookupByName(name).XMLDesc(0)
        except self._libvirt.libvirtError as e:
            raise HypervisorError(f"cannot read {name}'s definition: {e.get_error_message()}") from None
        for label in ET.fromstring(xml).iterfind("seclabel[@model='dac']/label"):
            uid, _, gid = (label.text or "").partition(":")
            try:
                return int(uid.lstrip("+")), int(gid.lstrip("+"))
            except ValueError:
                break
        raise HypervisorError(f"{name}: no DAC label in its definition: who its QEMU runs as is unknown")

    def resume(self, name: str) -> None:
        try:
            self.conn.lookupByName(name).resume()
        except self._libvirt.libvirtError as e:
            raise HypervisorError(f"cannot resume {name}: {e.get_error_message()}") from None

    def suspend(self, name: str) -> None:
        try:
            self.conn.lookupByName(name).suspend()
        except self._libvirt.libvirtError as e:
            raise HypervisorError(f"cannot pause {name}: {e.get_error_message()}") from None

    # --- saving and restoring (warm labs) ------------------------------------------------------------------
    def save(self, name: str, path: Path) -> None:
        """Write a domain's memory and device state to `path` (libvirt's raw format) and stop it.

        The image restores paused, so a whole lab can be resumed together."""
        try:
            self.conn.lookupByName(name).saveFlags(str(path), None, self._libvirt.VIR_DOMAIN_SAVE_PAUSED)
        except self._libvirt.libvirtError as e:
            raise HypervisorError(f"cannot save {name} to {path}: {e.get_error_message()}") from None

    def restore(self, path: Path) -> None:
        """A new QEMU process from a saved image, paused; its UDP sockets bind again, its ptys are new."""
        try:
            self.conn.restoreFlags(str(path), None, self._libvirt.VIR_DOMAIN_SAVE_PAUSED)
        except self._libvirt.libvirtError as e:
            raise HypervisorError(f"cannot restore {path}: {e.get_error_message()}") from None

    def version(self) -> str:
        """libvirt's and QEMU's versions: a saved image is only sure to restore under the same ones."""
        try:
            return f"libvirt {self.conn.getLibVersion()} qemu {self.conn.getVersion()}"
        except self._libvirt.libvirtError as e:
            raise HypervisorError(f"cannot ask libvirt for its version: {e.get_error_message()}") from None

    def console_argv(self, name: str, *, learner: bool = False) -> list[str]:
        """The program that carries one of a domain's serial consoles.

        Each guest has two: the first serial port is the learner's (`ikedlab console`), the second is
        ikedlab's control channel, which pexpect drives. A command a learner leaves running on one never
        blocks the other. --force takes the line over from a client left behind by a killed process.
        """
        device = [] if learner else ["--devname", CONTROL_DEVICE]
        return [require("virsh", "libvirt-clients"), "-c", self.uri, "console", name, *device, "--force"]

    def ptys(self, name: str) -> dict[str, Path]:
        """A running domain's ptys on this machine: serial ports by alias (CONTROL_DEVICE), virtio channels
        by their target's name (FILES_CHANNEL). None when the domain is gone, nor when it runs on a remote
        libvirt host (its ptys are that host's: a path here would only work by chance, on this very
        machine). A new QEMU (a restore) has new ones."""
        try:
            xml = "" if self.remote else self.conn.lookupByName(name).XMLDesc(0)
        except self._libvirt.libvirtError:
            xml = ""
        found = {}
        for device in ET.fromstring(xml).iterfind("devices/*[@type='pty']") if xml else []:
            source, key = device.find("source"), device.find("alias" if device.tag == "serial" else "target")
            if source is not None and source.get("path") and key is not None and key.get("name"):
                found[key.get("name", "")] = Path(source.get("path", ""))
        return found

    # --- finding -------------------------------------------------------------------------------------------
    def domains(self, lab: str | None = None) -> list[LabDomain]:
        """Domains ikedlab created (those with its metadata), of one lab or of all labs."""
        found = []
        for dom in self.conn.listAllDomains():
            try:
                meta = dom.metadata(self._libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE)
            except self._libvirt.libvirtError:
                continue  # not ours
            element = ET.fromstring(meta)
            if lab is not None and element.get("name") != lab:
                continue
            running = dom.isActive() == 1
            found.append(
                LabDomain(
                    dom.name(),
                    element.get("name", ""),
                    element.get("host", ""),
                    element.get("platform", ""),
                    running,
                    self._pid(dom.name()) if running else None,
                )
            )
        return sorted(found, key=lambda d: d.name)

    def _pid(self, name: str) -> int | None:
        if self.remote:
            return None  # its QEMU runs on the libvirt host, not here
        try:
            return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def peak_memory_kib(self, domain: LabDomain) -> int | None:
        """Peak resident memory of the domain's QEMU process (VmHWM), the guest's real cost on the host."""
        if domain.pid is None:
            return None
        try:
            for line in Path(f"/proc/{domain.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def qmp(self, name: str, command: str, arguments: dict | None = None) -> dict:
        """One QEMU monitor (QMP) command on a running domain: for what libvirt's XML cannot say (a
        network dump filter added to a live NIC). libvirt marks the domain 'tainted'; that is all."""
        import libvirt_qemu

        message: dict = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            reply = libvirt_qemu.qemuMonitorCommand(self.conn.lookupByName(name), json.dumps(message), 0)
        except self._libvirt.libvirtError as e:
            raise HypervisorError(
                f"{name}: QEMU monitor command {command} failed: {e.get_error_message()}"
            ) from None
        answer = json.loads(reply)
        if "error" in answer:
            raise HypervisorError(
                f"{name}: QEMU refused {command}: {answer['error'].get('desc', answer['error'])}"
            )
        return answer.get("return", {})

    # --- removing ------------------------------------------------------------------------------------------
    def destroy_lab(self, lab: str) -> list[str]:
        """Stop and remove every domain of this lab; nothing else. Returns the names removed."""
        domains = self.domains(lab)

        def remove(d: LabDomain) -> None:
            try:
                dom = self.conn.lookupByName(d.name)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():  # ikedlab makes transient domains; a defined one is a leftover of ours
                    dom.undefine()
            except self._libvirt.libvirtError as e:
                if e.get_error_code() != self._libvirt.VIR_ERR_NO_DOMAIN:
                    raise HypervisorError(f"cannot remove {d.name}: {e.get_error_message()}") from None

        # All at once: stopping a QEMU can take a while, and `reset` waits for every one.
        with ThreadPoolExecutor(max_workers=max(1, len(domains))) as pool:
            for future in [pool.submit(remove, d) for d in domains]:
                future.result()
        if self.remote:  # the lab's disk overlays on the libvirt host; the shared boot files stay
            self.volumes.remove(overlay_volume(lab, ""))
        elif qemu_files.separate(self.uri):
            qemu_files.remove_lab(lab)  # its overlays in QEMU's own folder
        return [d.name for d in domains]


# --- working-KVM detection ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Accel:
    kind: str  # libvirt domain type: "kvm" or "qemu"
    reason: str


def detect_accel(probe_kernel: Path | None, cache_dir: Path) -> Accel:
    """KVM when a guest really boots under it; software emulation otherwise.

    /dev/kvm can exist and open while guests hang after the firmware, so the device node proves nothing:
    boot a real kernel under KVM and wait, with a deadline, for its first words on the serial port.
    IKEDLAB_ACCEL=kvm|tcg overrides. The verdict is the host's, not the kernel's: cached until the host
    reboots, whichever kernel probed (checkouts booting different images would otherwise take turns
    re-probing, seconds each).
    """
    forced = settings.forced_accel()
    if forced:
        return Accel("kvm" if forced == "kvm" else "qemu", f"IKEDLAB_ACCEL={forced}")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("qemu", "no usable /dev/kvm: software emulation")
    if probe_kernel is None:
        return Accel("qemu", "no kernel to probe KVM with: software emulation")
    cache = cache_dir / "accel.json"
    key = _host_boot_id()
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return Accel(saved["kind"], saved["reason"] + " (cached)")
    except (OSError, ValueError, KeyError):
        pass
    verdict = _probe_kvm(probe_kernel)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "kind": verdict.kind, "reason": verdict.reason}))
    return verdict


def remote_accel() -> Accel:
    """A remote libvirt host's accelerator: software emulation unless IKEDLAB_ACCEL says (its /dev/kvm is
    not here to probe, and a KVM that is there may still not boot a guest: see detect_accel)."""
    forced = settings.forced_accel()
    if forced:
        return Accel("kvm" if forced == "kvm" else "qemu", f"IKEDLAB_ACCEL={forced}")
    return Accel("qemu", "a remote libvirt host: software emulation unless IKEDLAB_ACCEL=kvm")


def _host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_stopped_reason(console: str) -> str:
    """In words: the KVM probe guest's QEMU exited before the kernel spoke (a reset: -no-reboot ends it)."""
    # Terminal escapes (a reset is ESC c) and control bytes out; the last line with words in it stays.
    printable = re.sub(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[A-Za-z])|[^\x20-\x7e\n]", "", console)
    said = [line.strip() for line in printable.splitlines() if re.search(r"[A-Za-z]{3}", line)]
    last = f" (its console's last line: '{said[-1]}')" if said else " without a word on its console"
    return f"KVM is present, but the probe guest reset before its kernel started{last}: software emulation"


def slow_start_reason(seconds: float) -> str:
    """Why starting one domain took `seconds` (goal: under a second), in one line."""
    try:
        st = os.stat("/dev/kvm")
        group = grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        return f"starting a guest took {seconds:.0f}s: the machine is busy (other labs, other work)"
    if group != "kvm" or st.st_mode & 0o060 != 0o060:
        return (
            f"starting a guest took {seconds:.0f}s: /dev/kvm is {group}:{oct(st.st_mode & 0o777)[2:]}, so "
            "libvirt re-probes QEMU at every start; `scripts/setup-host.sh` (or chgrp kvm /dev/kvm && "
            "chmod 660 /dev/kvm) fixes it"
        )
    return f"starting a guest took {seconds:.0f}s: the machine is busy (other labs, other work)"


def _probe_kvm(kernel: Path) -> Accel:
    qemu = require("qemu-system-x86_64", "qemu-system-x86")
    argv = [
        "-accel",
        "kvm",
        "-m",
        "64",
        "-nodefaults",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
    ]
    started = time.monotonic()
    child = pexpect.spawn(qemu, argv, timeout=KVM_PROBE_SECONDS)
    try:
        child.expect("Linux version")
        return Accel("kvm", f"KVM booted a probe kernel in {time.monotonic() - started:.1f}s")
    except pexpect.TIMEOUT:
        return Accel(
            "qemu",
            f"KVM is present but a probe kernel printed nothing in {KVM_PROBE_SECONDS:g}s: "
            "software emulation",
        )
    except pexpect.EOF:
        return Accel("qemu", probe_stopped_reason((child.before or b"").decode(errors="replace")))
    finally:
        child.close(force=True)
