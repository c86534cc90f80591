"""A fake serial console for fast tests of host.py, provisioning and lab.py: no VMs.

It answers what a guest's shell would, in the platform's own dialect (asked of the platform, so it speaks any
registered one): files written over it land in a dict and their checksum comes back, `iked -n` says
configuration OK, and readings (SAs, counters, captures) come from recorded output the test hands it.
Every command and every file written is recorded, in order.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lab.console import Result
from lab.errors import CommandError
from lab.platforms import FileSpec, Platform

#: Host.write_file's command: the file travels as base64, decoded by the platform's own decoder.
_WRITE = re.compile(r"^mkdir -p \S+ && \(umask 077 && (.+?) > (\S+)\) && chmod ([0-7]+) \S+ && ")
FAKE_PEM = "-----BEGIN PUBLIC KEY-----\nFAKE{host}\n-----END PUBLIC KEY-----\n"


@dataclass
class FakeConsole:
    host: str
    platform: Platform
    answers: dict[str, str] = field(default_factory=dict)  # exact command -> its output
    files: dict[str, str] = field(default_factory=dict)
    log: list[str | FileSpec] = field(default_factory=list)  # commands run and files written, in order
    failing: set[str] = field(default_factory=set)  # commands that exit 1
    attached: bool = False
    closed: bool = False

    def run(self, command: str, *, timeout: float = 0, stdin: str | None = None) -> Result:
        if stdin is not None and (m := _WRITE.match(command)):
            assert m.group(1) == self.platform.facts.base64_decode, command
            data = base64.b64decode(stdin)  # as the guest's decoder would
            path = shlex.split(m.group(2))[0]
            self.files[path] = data.decode()
            self.log.append(FileSpec(path, data.decode(), int(m.group(3), 8)))
            return Result(command, 0, f"{hashlib.sha256(data).hexdigest()}  {path}\n")
        self.log.append(command)
        if command in self.failing:
            return Result(command, 1, "")
        return Result(command, 0, self._answer(command))

    def _answer(self, command: str) -> str:
        p = self.platform
        if command in self.answers:
            return self.answers[command]
        if command == p.ike_check_command():
            return "configuration OK\n"
        if command == f"cat {shlex.quote(p.public_key)}":
            return FAKE_PEM.format(host=self.host)
        if command.startswith("cat "):
            return self.files.get(shlex.split(command)[1], "")
        if command.startswith("openssl base64 -in"):
            return base64.b64encode(b"fake pcap").decode() + "\n"
        if " & echo $!" in command:
            return "4242\n"
        return ""

    def check(self, command: str, *, timeout: float = 0, stdin: str | None = None) -> Result:
        result = self.run(command, timeout=timeout, stdin=stdin)
        if not result.ok:
            raise CommandError(self.host, command, result.status, result.output, None)
        return result

    def attach(self, timeout: float = 0, *, resumed: bool = False, with_sync=None) -> None:  # noqa: ANN001
        self.attached = True
        if with_sync:
            self.log.append(with_sync())  # it rides on the sync line: recorded like a command

    def wait_for(self, pattern: str, timeout: float, what: str) -> str:
        return ""

    def close(self) -> None:
        self.closed = True

    def transcript_path(self) -> Path | None:
        return None


DATA = Path(__file__).parent / "data"

#: Recorded output of each registered platform's readings, by what it shows. A new platform adds its own
#: recordings here; the contract test (test_platform_contract.py) then holds it to the same rules.
RECORDED: dict[str, dict[str, Path]] = {
    "linux": {
        "sa_established": DATA / "linux" / "ikectl-show-sa-init.txt",
        "sa_none": DATA / "openbsd" / "ikectl_show_sa_empty.txt",  # ikectl is the same program on both
        "counters_zero": DATA / "linux" / "counters-init-before.txt",
        "counters_traffic": DATA / "linux" / "counters-init-after.txt",
        "capture_decapsulated": DATA / "linux" / "tcpdump-nflog.txt",
        "ping_ok": DATA / "linux" / "ping-busybox.txt",
        "ping_lost": DATA / "linux" / "ping-busybox-no-reply.txt",
    },
    "openbsd": {
        "sa_established": DATA / "openbsd" / "ikectl_show_sa_init.txt",
        "sa_none": DATA / "openbsd" / "ikectl_show_sa_empty.txt",
        "counters_zero": DATA / "openbsd" / "netstat_esp_ah_zero.txt",
        "counters_traffic": DATA / "openbsd" / "netstat_esp_ah.txt",
        "capture_decapsulated": DATA / "openbsd" / "tcpdump_enc0.txt",
        "ping_ok": DATA / "openbsd" / "ping_openbsd_ok.txt",
        "ping_lost": DATA / "openbsd" / "ping_openbsd_loss.txt",
    },
}


# strongSwan on the Linux appliance: its own SA listing; the kernel's readings are the Linux platform's.
RECORDED["strongswan"] = {
    **RECORDED["linux"],
    "sa_established": DATA / "strongswan" / "list-sas-resp.txt",
    "sa_none": DATA / "strongswan" / "list-sas-none.txt",
}

# libreswan on the Linux appliance: pluto's states, trafficstatus and the kernel's policies (sa_command);
# the kernel's readings are the Linux platform's.
RECORDED["libreswan"] = {
    **RECORDED["linux"],
    "sa_established": DATA / "libreswan" / "sa-established-resp.txt",
    "sa_none": DATA / "libreswan" / "sa-none-resp.txt",
}


def recorded(platform: str, what: str) -> str:
    return RECORDED[platform][what].read_text()


def record_blueprint(run_dir: Path, lab: str = "default", platform: str = "linux") -> None:
    """The guide's lab recorded in `run_dir` as `up` records it (lab/blueprint.py), on `platform`."""
    from lab.blueprint import Blueprint
    from lab.placement import load_topology, resolve_platforms
    from lab.plan import Options
    from lab.platforms import BootMedia

    topology = load_topology(None)
    media = {h: BootMedia() for h in topology.hosts}
    run_dir.mkdir(parents=True, exist_ok=True)
    Blueprint(lab, run_dir, topology, resolve_platforms(topology, platform), Options(), media, "qemu").write()
