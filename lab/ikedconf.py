"""iked.conf as iked reads it: the words it reserves, the identities ikedlab can give it, and iked's own
verdict on a user's file, taken on the host before any guest boots and told with the user's file and line.

Facts from OpenBSD's sbin/iked/parse.y: a bare word that is a keyword is never a macro name; a srcid is one
word, typed by its shape (a leading '/' is a DN, an IP address an IPv4/IPv6 id, an '@' a UFQDN, anything
else an FQDN); iked looks a peer's public key up as pubkeys/<type>/<lower-cased id>; `iked -n` reports
`FILE: LINE: message`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import progress, redact
from lab.command import clean_env, run
from lab.errors import CommandFailed, IkedConfError
from lab.gate import FQDN, HOST, IKED_CONF_BYTES, GateError, read_text, shown

#: Reserved words of iked.conf (OpenBSD 6.x-7.x and OpenIKED portable): a gateway's name becomes a macro
#: (`init="192.0.2.1"`), and a macro named like a keyword is a syntax error.
KEYWORDS = frozenset(
    """accounting active ah any auth bytes cert_partial_chain childsa client config couple dae decouple
    default dpd_check_interval dstid dynamic eap enc enforcesingleikesa esn esp file flow fragmentation from
    group iface ike ikelifetime ikesa ikev2 include inet inet6 ipcomp lifetime listen local max-failovers
    max-tries maxage mobike name natt noenforcesingleikesa noesn nofragmentation nomobike nostickyaddress
    novendorid ocsp on passive peer port prf proto psk quick radius rdomain request sa server set skip srcid
    stickyaddress tag tap tcpmd5 to tolerate transport tunnel user vendorid""".split()
)

_VERDICT_LINE = re.compile(r"^(?P<file>[^:]+): ?(?P<line>\d+): ?(?P<message>.*)$")
HOST_CHECK_TIMEOUT = 30.0


def macro_name(host: str) -> str:
    """The iked.conf macro that holds a gateway's address: letters, digits and underscores."""
    return re.sub(r"\W", "_", host)


def srcid_problem(srcid: str) -> str | None:
    """Why iked (or ikedlab's key layout) cannot use `srcid` as a gateway's identity; None when it can."""
    try:
        ipaddress.ip_address(srcid)
    except ValueError:
        pass
    else:
        return (
            f"{shown(srcid)} is an IP address: iked would make it an IP identity, and ikedlab installs keys "
            "for FQDN identities (such as init.example.com)"
        )
    return FQDN.problem(srcid)


def gateway_name_problem(host: str) -> str | None:
    """Why a gateway cannot have this name in iked.conf; None when it can."""
    if macro_name(host) in KEYWORDS:
        return f"'{host}' is an iked.conf keyword: a gateway's name is the macro of its address"
    return None


def name_lines(output: str, checked: str, shown: str) -> list[str]:
    """iked's complaints about the file it read at `checked`, told as `shown:LINE: message`.

    Lines without a line number that merely repeat that the file failed are dropped when there are
    numbered ones; the rest keep their words, with the path replaced.
    """
    numbered, other = [], []
    for raw in output.splitlines():
        line = raw.strip()
        if not line or line == "configuration OK":
            continue
        m = _VERDICT_LINE.match(line)
        if m and m.group("file").strip() == checked:
            numbered.append(f"{shown}:{m.group('line')}: {m.group('message').strip()}")
        else:
            other.append(line.replace(checked, shown).removeprefix("iked: ").removeprefix("parent: "))
    return numbered or other


@dataclass(frozen=True)
class IkedJudge:
    """An iked this host can run to judge a file as a gateway's iked will: the argv before `-n -f FILE`,
    the environment it needs, and what to call it in messages."""

    argv: tuple[str, ...]
    label: str
    env: tuple[tuple[str, str], ...] = ()


def iked_on_host() -> str | None:
    return shutil.which("iked", path=clean_env()["PATH"])


def host_judge() -> IkedJudge | None:
    """This host's own iked (Debian's, 7.2 on bookworm); None when it is not installed."""
    iked = iked_on_host()
    return IkedJudge((iked,), "this host's iked") if iked else None


def tree_judge(tree: Path, label: str) -> IkedJudge:
    """The iked of an image's tree (lab.images.linux keeps it beside the image), run with the tree's own
    loader, libraries, OpenSSL modules and configuration: the trixie variant's iked 7.4 needs glibc 2.41,
    which a bookworm host lacks, and OpenSSL would otherwise load the host's legacy provider."""
    from lab.images.libraries import host_argv

    env = (
        ("OPENSSL_MODULES", str(tree / "usr/lib/x86_64-linux-gnu/ossl-modules")),
        ("OPENSSL_CONF", str(tree / "etc/ssl/openssl.cnf")),
    )
    return IkedJudge(tuple(host_argv(tree, "usr/sbin/iked")), label, env)


def check_with(judge: IkedJudge, text: str, shown: str) -> list[str]:
    """`judge`'s verdict on an iked.conf: [] when it is accepted, its complaints (named `shown:LINE: …`)
    when not."""
    # iked reads only files that nobody else may read (its own check): a private copy, then compare names.
    fd, tmp = tempfile.mkstemp(prefix="ikedlab-", suffix=".conf")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            done = run(
                [*judge.argv, "-n", "-f", tmp], check=False, timeout=HOST_CHECK_TIMEOUT, env=dict(judge.env)
            )
        except CommandFailed as e:
            return [f"{shown}: iked -n ({judge.label}): {e.message}"]
    finally:
        Path(tmp).unlink(missing_ok=True)
    output = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode == 0:
        return []
    return name_lines(output, tmp, shown) or [f"{shown}: iked -n ({judge.label}) exited {done.returncode}"]


def check_on_host(text: str, shown: str) -> list[str] | None:
    """The host's iked's verdict (check_with); None when iked is not installed here."""
    judge = host_judge()
    return None if judge is None else check_with(judge, text, shown)


def parse_options(items: list[str]) -> dict[str, Path]:
    """`--iked-conf HOST=FILE` options as {host: file}; every malformed or repeated one is a problem."""
    problems: list[str] = []
    files: dict[str, Path] = {}
    for item in items:
        host, _, path = item.partition("=")
        if not host or not path:
            problems.append(f"--iked-conf {item}: expected HOST=FILE")
        elif problem := HOST.problem(host):
            problems.append(f"--iked-conf: {problem}")
        elif host in files:
            problems.append(f"--iked-conf {item}: {host} already has {files[host]}")
        else:
            files[host] = Path(path)
    if problems:
        raise IkedConfError(problems)
    return files


def read_user_confs(files: dict[str, Path], gateways: list[str], topology_name: str) -> dict[str, str]:
    """Each user's iked.conf, read before anything else (no image built, no guest booted): {host: text}.

    Every problem (a host that is no gateway, an unreadable file) is collected and raised once; judging the
    files is `judge_user_confs`, once the iked each gateway will run is known."""
    problems: list[str] = []
    texts: dict[str, str] = {}
    for host, path in files.items():
        given = f"--iked-conf {host}={path}"
        if host not in gateways:
            problems.append(
                f"{given}: no gateway '{host}' in {topology_name} (gateways: {', '.join(gateways) or 'none'})"
            )
            continue
        try:
            texts[host] = read_text(path, IKED_CONF_BYTES)
        except GateError as e:
            problems.append(f"{given}: {e.message}")
            continue
        redact.register_config(texts[host])  # its PSKs are the lab's secrets from here on
    if problems:
        raise IkedConfError(problems)
    return texts


def judge_user_confs(
    texts: Mapping[str, str], sources: Mapping[str, str], judges: Mapping[str, IkedJudge | None] | None = None
) -> None:
    """Each user's iked.conf (`texts`, host -> text, read from `sources`, host -> file) judged before any
    guest boots, every line iked rejects collected into one IkedConfError, named by the user's file and line.

    `judges` (gateway -> the iked it will run, as the host can run it; None: only the guest can) picks the
    judge of each file; without `judges`, the host's own iked judges every file (`ikedlab render`, which
    boots nothing). A file no judge here can read is said, in one line, to be judged by the gateway's own
    iked as provisioning installs it."""
    problems: list[str] = []
    unchecked: list[str] = []
    default = host_judge() if judges is None else None
    for host, text in texts.items():
        source = sources.get(host, host)
        judge = default if judges is None else judges.get(host)
        if judge is None:
            unchecked.append(f"{source} ({host})")
        else:
            problems.extend(check_with(judge, text, source))
    if problems:
        raise IkedConfError(problems)
    if unchecked:
        why = (
            "iked is not installed on this host (apt-get install openiked)"
            if judges is None
            else ("this host cannot run the gateway's iked")
        )
        progress.say(
            f"  iked.conf: {why}: {', '.join(unchecked)} judged by the gateway's own iked as it is installed"
        )
