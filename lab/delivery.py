"""Files into a running guest through its files channel, a virtio serial port (lab/hypervisor.py
FILES_CHANNEL): a local iked build, ~1 MB, in about a second where the control console would take a minute
(1.1 MiB/s against 7-23 KiB/s, measured at load 5-9).

The host packs the files as one gzip'd tar (owned by root, modes kept), starts the guest's receiver over the
control console (it reads exactly that many bytes from the port and unpacks them at /), writes the archive
into the channel's pty, and proves every file by its SHA-256, read back over the console. The lab's console
keeper holds the pty open (lab/keeper.py), so QEMU reads it at once.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import select
import tarfile
import termios
import threading
import time
import tty
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lab.errors import ProvisionError
from lab.hypervisor import FILES_CHANNEL

if TYPE_CHECKING:
    from lab.host import Host

SECONDS = 120.0  # a delivery of a few MB; the channel carries ~1 MiB/s under software emulation


def archive(files: Mapping[str, Path]) -> bytes:
    """`files` (path in the guest -> file on the host) as a gzip'd tar that unpacks at /, owned by root."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
        for guest, local in sorted(files.items()):
            info = tar.gettarinfo(str(local), arcname=guest.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(local, "rb") as f:
                tar.addfile(info, f)
    return out.getvalue()


def deliver(host: Host, pty: Path, files: Mapping[str, Path], timeout: float = SECONDS) -> None:
    """Put `files` into `host` through its files channel (`pty` on this machine); ProvisionError naming the
    host and file when one did not arrive intact.

    Nothing is written before the guest's receiver has the port open and says so: the guest's driver drops
    what arrives on a port nobody holds open, and right after a restore a read there ended at once (QEMU
    had not yet seen the host's end held): archives that failed to unpack, "gzip: invalid magic", on labs
    restored from their booted base. The token's own line on the port marks where this delivery starts."""
    data = archive(files)
    token = f"ikedlab-files-{secrets.token_hex(6)}"
    fd = os.open(pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    failed: list[BaseException] = []
    opened, stop = threading.Event(), threading.Event()
    seen: list[str] = []

    def watch(text: str) -> None:
        seen.append(text)
        if token in "".join(seen):
            opened.set()

    try:
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)  # what an interrupted delivery left is not this one's
        framed = f"{token}\n".encode() + data
        writer = threading.Thread(
            target=_write, args=(fd, framed, opened, stop, failed, timeout), daemon=True
        )
        writer.start()
        command = host.platform.receive_files_command(FILES_CHANNEL, len(data), token)
        received = host.console.run(command, timeout=timeout, on_output=watch)
        stop.set()
        writer.join(timeout)
    finally:
        stop.set()
        os.close(fd)
    if not received.ok:
        raise ProvisionError(
            f"{host.name}: the files channel's receiver failed (exit {received.status}):"
            f" {received.output.strip()[-200:] or 'no output'}"
        )
    if failed:
        raise ProvisionError(f"{host.name}: the files channel did not take the files: {failed[0]}")
    _prove(host, files, "the files channel")


def deliver_by_console(host: Host, files: Mapping[str, Path], timeout: float = 5 * SECONDS) -> None:
    """The same archive through the control console, for a guest whose files channel is not on this machine
    (a remote libvirt host's): at 7-23 KiB/s a build's ~300 KB take 15-40 s."""
    from lab.host import base64_lines

    command = f"{host.platform.facts.base64_decode} | gzip -dc | tar -xf - -C /"
    received = host.console.run(command, timeout=timeout, stdin=base64_lines(archive(files)))
    if not received.ok:
        raise ProvisionError(
            f"{host.name}: unpacking files sent over the console failed: {received.output[-200:]}"
        )
    _prove(host, files, "the console")


def _prove(host: Host, files: Mapping[str, Path], way: str) -> None:
    for guest, local in files.items():
        got = host.platform.parse_checksum(host.run(host.platform.checksum_command(guest)).output)
        if got != hashlib.sha256(local.read_bytes()).hexdigest():
            raise ProvisionError(f"{host.name}: {guest} arrived corrupted through {way}")


def _write(
    fd: int,
    data: bytes,
    opened: threading.Event,
    stop: threading.Event,
    failed: list[BaseException],
    timeout: float,
) -> None:
    """Once the guest has the port open, write all of `data`, waiting while the guest reads; give up when
    told or late."""
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    try:
        while not opened.wait(0.05):
            if stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError("the guest's receiver never opened the port")
        while view:
            if stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"{len(view)} of {len(data)} bytes not taken")
            select.select([], [fd], [], 0.1)
            try:
                view = view[os.write(fd, view[:65536]) :]
            except BlockingIOError:
                continue
    except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
        failed.append(e)
