"""Which libvirt host a lab runs on: the caller's own libvirtd, or another machine's over a remote transport
(IKEDLAB_LIBVIRT_URI=qemu+ssh://host/system, or `ikedlab --connect URI`), and, for `pytest -n N scenarios`,
a small hosts file (IKEDLAB_HOSTS) whose libvirt hosts take the workers' labs in turn: worker k on entry
k mod len. A whole lab always runs on one host (its links are UDP sockets on that host's 127.0.0.1).

A remote host shares no file with the caller: what its QEMU boots goes there as storage volumes
(lab/volumes.py), consoles come over libvirt's own connection, and nothing the daemon opens is a path of the
caller's. The hosts file is input from others: each entry is checked before it reaches libvirt.

    # IKEDLAB_HOSTS=hosts.yaml
    hosts:
      - qemu:///system
      - qemu+ssh://root@lab2.example.org/system
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from lab.errors import InputError

#: libvirt's QEMU driver, over its local socket or a transport to another machine.
_URI = re.compile(
    r"qemu(\+(unix|ssh|libssh|libssh2|tcp|tls|ext))?://[^\s'\"<>\\]*/(system|session)(\?[^\s'\"<>\\]*)?"
)
LOCAL_TRANSPORTS = ("", "unix")
MAX_BYTES = 64 * 1024


def is_remote(uri: str) -> bool:
    """Whether libvirt at `uri` is reached over a transport (ssh, tcp, tls, ext) or names a host: a daemon
    that may not see the caller's files, whatever machine it turns out to be."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    return transport not in LOCAL_TRANSPORTS or bool(parts.hostname)


def check_uri(uri: str, where: str) -> str:
    if not isinstance(uri, str) or len(uri) > 512 or not _URI.fullmatch(uri):
        shown = repr(uri)[:80]
        raise InputError([f"{where}: {shown}: expected a libvirt QEMU URI such as qemu+ssh://host/system"])
    return uri


def load_hosts(path: Path) -> list[str]:
    """The libvirt URIs of a hosts file, every entry checked (all problems at once, each naming its entry)."""
    try:
        raw = path.read_bytes()[: MAX_BYTES + 1]
    except OSError as e:
        raise InputError([f"{path}: unreadable ({e.strerror})"]) from None
    if len(raw) > MAX_BYTES:
        raise InputError([f"{path}: larger than {MAX_BYTES // 1024} KiB: not a hosts file"])
    try:
        data = yaml.safe_load(raw.decode())
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError([f"{path}: not YAML ({str(e).splitlines()[0]})"]) from None
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list) or not hosts:
        raise InputError([f"{path}: hosts: expected a list of libvirt URIs"])
    problems = []
    for i, uri in enumerate(hosts):
        try:
            check_uri(uri, f"{path}: hosts[{i}]")
        except InputError as e:
            problems += e.problems
    if problems:
        raise InputError(problems)
    return list(hosts)


def for_worker(hosts: list[str], worker: str) -> str:
    """The host of xdist worker `worker` ("gw3"; "" without xdist: the first host)."""
    index = int(worker[2:]) if re.fullmatch(r"gw\d+", worker) else 0
    return hosts[index % len(hosts)]
