"""Files through a guest's files channel (lab/delivery.py), the host's side against a stand-in guest: a pty
pair as QEMU offers one (the host writes into the offered end, the "guest" reads QEMU's end), a receiver that
unpacks what it read into a folder standing for the guest's /."""

from __future__ import annotations

import hashlib
import io
import os
import re
import select
import shlex
import shutil
import tarfile
from pathlib import Path

import pytest

from lab import delivery
from lab.console import Result
from lab.errors import ProvisionError
from lab.platforms import get_platform


class Guest:
    """Runs the two commands delivery sends, as the Linux appliance would, over a pty pair."""

    def __init__(self, root: Path, corrupt: bool = False) -> None:
        self.root, self.corrupt = root, corrupt
        self.master, slave = os.openpty()
        self.path = Path(os.ttyname(slave))
        os.close(slave)
        self.platform = get_platform("linux")
        self.name = "init"
        self.commands: list[str] = []
        self.console = self  # commands that stream go to the console itself

    def run(self, command: str, *, timeout: float = 0, on_output=None, stdin=None) -> Result:  # noqa: ANN001
        self.commands.append(command)
        if "virtio-ports" in command:  # the receiver: the port opened, the token said, then the archive
            token = re.search(r"echo (ikedlab-files-[0-9a-f]+)", command).group(1)  # type: ignore[union-attr]
            size = int(re.search(r"head -c (\d+)", command).group(1))  # type: ignore[union-attr]
            # The guest's driver drops what comes before the port is open: nothing may have been sent yet.
            assert not select.select([self.master], [], [], 0.3)[0], "written before the port was open"
            on_output(f"{token}\n")
            data = b""
            while f"{token}\n".encode() not in data:
                data += os.read(self.master, 1)  # the shell's `read`: a byte at a time, up to the token
            data = b""
            while len(data) < size:
                data += os.read(self.master, size - len(data))
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(self.root, filter="tar")
            if self.corrupt:
                (self.root / "usr/sbin/iked").write_bytes(b"flipped")
            return Result(command, 0, "")
        path = shlex.split(command)[-1]
        digest = hashlib.sha256((self.root / path.lstrip("/")).read_bytes()).hexdigest()
        return Result(command, 0, f"{digest}  {path}\n")


@pytest.fixture
def build(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for guest, content in (("/usr/sbin/iked", os.urandom(300_000)), ("/usr/sbin/ikectl", b"ikectl")):
        local = tmp_path / "build" / guest.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(content)
        local.chmod(0o755)
        files[guest] = local
    return files


def test_files_arrive_whole_with_their_modes_and_are_proven(tmp_path: Path, build: dict[str, Path]) -> None:
    guest = Guest(tmp_path / "guest")
    delivery.deliver(guest, guest.path, build)  # type: ignore[arg-type]
    for path, local in build.items():
        arrived = tmp_path / "guest" / path.lstrip("/")
        assert arrived.read_bytes() == local.read_bytes() and arrived.stat().st_mode & 0o777 == 0o755
    assert "org.ikedlab.files" in guest.commands[0]
    assert [c.split()[0] for c in guest.commands[1:]] == ["sha256sum", "sha256sum"]


def test_the_archive_unpacks_at_the_root_owned_by_root(build: dict[str, Path]) -> None:
    with tarfile.open(fileobj=io.BytesIO(delivery.archive(build)), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"usr/sbin/iked", "usr/sbin/ikectl"}
    assert all((m.uid, m.gid, m.uname) == (0, 0, "root") for m in members.values())


def test_a_file_that_arrives_changed_is_one_line_naming_it(tmp_path: Path, build: dict[str, Path]) -> None:
    guest = Guest(tmp_path / "guest", corrupt=True)
    with pytest.raises(ProvisionError) as err:
        delivery.deliver(guest, guest.path, build)  # type: ignore[arg-type]
    assert str(err.value) == "init: /usr/sbin/iked arrived corrupted through the files channel"


def test_a_receiver_that_fails_is_said_and_the_writer_gives_up(
    tmp_path: Path, build: dict[str, Path]
) -> None:
    guest = Guest(tmp_path / "guest")
    guest.run = lambda command, timeout=0, **_: Result(  # type: ignore[method-assign]
        command, 1, "grep: /sys/class/virtio-ports/*/name: No such file"
    )
    with pytest.raises(ProvisionError) as err:
        delivery.deliver(guest, guest.path, build, timeout=5)  # type: ignore[arg-type]
    assert str(err.value).startswith("init: the files channel's receiver failed (exit 1): grep: ")


def test_a_build_goes_in_without_its_debugging_sections(tmp_path: Path) -> None:
    from lab.images.iked_build import PROGRAMS, program_files

    for guest in PROGRAMS.values():
        (tmp_path / guest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2("/bin/true", tmp_path / guest)  # an ELF program, as a build makes
    files = program_files(tmp_path)
    assert sorted(files) == ["/usr/sbin/ikectl", "/usr/sbin/iked"]
    for lean in files.values():
        assert lean.parent.parent.parent.name == "lean" and os.access(lean, os.X_OK)
    assert program_files(tmp_path) == files  # made once


def test_without_a_files_channel_here_the_console_carries_them(
    tmp_path: Path, build: dict[str, Path]
) -> None:
    """A remote libvirt host's guest: its channel's pty is that host's; the archive goes over the console."""
    import base64

    guest = Guest(tmp_path / "guest")

    class Console:
        def run(self, command: str, *, timeout: float = 0, stdin: str = "") -> Result:
            assert command.startswith(guest.platform.facts.base64_decode)
            data = base64.b64decode("".join(stdin.split()))
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(guest.root, filter="tar")
            return Result(command, 0, "")

    guest.console = Console()  # type: ignore[attr-defined]
    delivery.deliver_by_console(guest, build)  # type: ignore[arg-type]
    assert (tmp_path / "guest/usr/sbin/iked").read_bytes() == build["/usr/sbin/iked"].read_bytes()
