"""Live packet capture of any link of a running lab, as a pcap file or a stream for Wireshark.

QEMU itself dumps the frames: a `filter-dump` object is attached, through the QEMU monitor, to the network
backend of one end of the link. QEMU writes a standard pcap (Ethernet link type) to a file on the host, one
complete record per frame, as the frames pass. Why this and not tcpdump in a guest: it works for every guest
platform and every link (also ones between hosts without tcpdump), costs the emulated guests no CPU, and
needs no binary over the serial console, which is a text channel (base64 framing would be needed, and the
console would be busy for the whole capture). The file is followed as it grows, so `-w -` streams into
`wireshark -k -i -`. A point-to-point link carries the same frames at both ends; the dump is taken at the
router's end when the link has one (inet), else at the first end.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lab import gate, qemu_files
from lab.command import require, run
from lab.errors import LabError
from lab.hypervisor import Hypervisor, domain_name
from lab.topology import Topology
from lab.volumes import overlay_volume

if TYPE_CHECKING:
    from lab.lab import Lab

PCAP_HEADER_BYTES = 24
ROUTER = "inet"
POLL = 0.05  # how often a growing dump is looked at while streaming


@dataclass(frozen=True)
class LinkEnd:
    link: str
    host: str
    nic: int  # the host's interface index on the link: libvirt names its QEMU backend hostnet{nic}


def link_end(topology: Topology, link: str, at: str | None = None) -> LinkEnd:
    """Where to dump a link: at `at` when given, else at the router's end, else at the first end."""
    if link not in topology.links:
        raise LabError(f"no link '{link}' in the topology (links: {', '.join(topology.links)})")
    ends = list(topology.links[link].ends)
    host = at or (ROUTER if ROUTER in ends else ends[0])
    if host not in ends:
        raise LabError(f"link '{link}' joins {' and '.join(ends)}, not {host}")
    return LinkEnd(link, host, topology.host(host).interface_on(link).index)


@contextmanager
def dumping(hv: Hypervisor, lab: str, end: LinkEnd, pcap: Path) -> Iterator[Path | None]:
    """QEMU writes every frame of `end`'s NIC while the block runs; `pcap` holds them when it ends. The block
    gets the file being written, to follow it as it grows, or None on a remote libvirt host: there QEMU
    writes a volume of ikedlab's pool (named after the lab, so it goes with the lab), read back into `pcap`
    when the dump ends.

    Here QEMU opens its file by name (net/dump.c opens it with open(2): a descriptor passed over QMP is no
    use), so when QEMU is libvirt's own user it writes a file of QEMU_DIR made for it, moved to `pcap`
    (ikedlab's, 0600) when the dump ends (lab/qemu_files.py)."""
    pcap = pcap.resolve()  # QEMU opens the file from its own working directory, not ours
    pcap.parent.mkdir(parents=True, exist_ok=True)
    pcap.unlink(missing_ok=True)
    domain = domain_name(lab, end.host)
    filter_id = f"ikedlab-dump-{secrets.token_hex(3)}"
    volume = f"{overlay_volume(lab, '')}{filter_id}.pcap"
    live: Path | None = None
    if hv.remote:
        target = hv.volumes.writable(volume, *hv.qemu_ids(domain))
    else:
        user = hv.qemu_user()
        live = qemu_files.capture_file(lab, pcap.name, user) if user.apart else pcap
        target = str(live)
    hv.qmp(
        domain,
        "object-add",
        {"qom-type": "filter-dump", "id": filter_id, "netdev": f"hostnet{end.nic}", "file": target},
    )
    try:
        if hv.remote:
            _wait_remote_header(hv, volume)
        yield live
    finally:
        try:
            hv.qmp(domain, "object-del", {"id": filter_id})
        finally:
            if hv.remote:
                hv.volumes.download(volume, pcap)
                hv.volumes.remove(volume)
            elif live is not None and live != pcap:
                qemu_files.take_capture(live, pcap)


def _wait_remote_header(hv: Hypervisor, volume: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while hv.volumes.size(volume) < PCAP_HEADER_BYTES:
        if time.monotonic() >= deadline:
            raise LabError(f"QEMU did not start the dump {volume} on the libvirt host within {timeout:g}s")
        time.sleep(POLL)


def follow(pcap: Path, out: BinaryIO, done: Callable[[], bool]) -> int:
    """Copy `pcap` to `out` as it grows until `done()` is true, then the rest; return the bytes copied.

    QEMU writes each frame's record in one write, so a reader never sees more than a torn last record,
    which the next read completes.
    """
    copied = 0
    with pcap.open("rb") as f:
        while True:
            finished = done()  # read after deciding, so the last frames are never left behind
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                copied += len(chunk)
            elif finished:
                return copied
            else:
                time.sleep(POLL)  # the pace of following a file, not a wait for an event


def capture_path(run_dir: Path, link: str) -> Path:
    gate.LINK.check(link, "capture")  # the link's name becomes the pcap's, written by QEMU as root
    return run_dir / "captures" / f"{link}-{time.strftime('%Y%m%d-%H%M%S')}.pcap"


def stream_link(
    hv: Hypervisor,
    lab: str,
    end: LinkEnd,
    pcap: Path,
    out: BinaryIO | None,
    seconds: float | None = None,
) -> int:
    """Dump a link into `pcap` (kept: the lab's recent captures) and copy it to `out` as it grows.

    Runs for `seconds`, or until interrupted (Ctrl-C) or until the reader goes away (Wireshark closed).
    Returns the pcap's size.
    """
    deadline = time.monotonic() + seconds if seconds is not None else None
    stopped = [False]

    def done() -> bool:
        return stopped[0] or (deadline is not None and time.monotonic() >= deadline)

    with dumping(hv, lab, end, pcap) as live:
        if live is not None:
            _wait_for_header(live)
        try:
            if out is None or live is None:  # a remote host's dump arrives whole, when it ends
                while not done():
                    time.sleep(POLL)
            else:
                follow(live, out, done)
        except (KeyboardInterrupt, BrokenPipeError):
            stopped[0] = True
    if out is not None and hv.remote:
        out.write(pcap.read_bytes())
        out.flush()
    return pcap.stat().st_size


def _wait_for_header(pcap: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not (pcap.exists() and pcap.stat().st_size >= PCAP_HEADER_BYTES):
        if time.monotonic() >= deadline:
            raise LabError(f"QEMU did not start the dump {pcap} within {timeout:g}s")
        time.sleep(POLL)


@contextmanager
def captured(lab: Lab, link: str, into: Path | None = None, at: str | None = None) -> Iterator[Path]:
    """For scenarios: every frame of `link` while the block runs, in a pcap (in `into`, else the lab's
    captures folder) whose path the block gets."""
    assert lab.topology, "the lab is neither up nor attached"
    end = link_end(lab.topology, link, at)
    pcap = into / f"{link}.pcap" if into else capture_path(lab.run_dir, link)
    with dumping(lab.hypervisor, lab.name, end, pcap) as live:
        if live is not None:
            _wait_for_header(live)
        yield pcap  # complete once the block is over


def read_pcap(pcap: Path) -> str:
    """The pcap as `tcpdump -n -r` prints it (the host's tcpdump), for the platform parsers."""
    done = run([require("tcpdump", "tcpdump"), "-n", "-r", pcap], check=False)
    return done.stdout.decode(errors="replace")
