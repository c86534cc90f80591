"""The gate for input from other people: names, sizes and texts from topologies, bundles, users' files and
the command line pass here before they touch a path, a template, a report or a guest's shell.

Names are judged whole, with `re.fullmatch`: `re.match` with `$` lets a trailing newline through, and a
host name "init\\n" would reach iked.conf, key file names and libvirt names. Values are put into messages
through `shown()`, which never formats more than a few dozen characters and never calls `str()` on a
mapping or a list (a YAML value built from aliases expands on `str()`: a 393-byte topology gave a 3.2 MB
message, nine levels need ~14 GB). Files are read with a size cap, as text or refused in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.errors import IkedlabError

SHOWN = 60  # characters of a value an error message quotes

#: Caps on what is read from other people's files. The guide's topology is 1.2 KB and the guide's iked.conf
#: 0.5 KB: the caps leave a hundred times that, and keep a hostile file from filling memory or a console.
TOPOLOGY_BYTES = 256 * 1024
IKED_CONF_BYTES = 64 * 1024


class GateError(IkedlabError):
    """Input from outside that ikedlab refuses: a name that breaks its rule, a file too big or not text."""


@dataclass(frozen=True)
class Name:
    """A kind of name and its one rule, judged on the whole value."""

    what: str  # "a host name"
    pattern: str
    rule: str  # the rule in words, for the message

    def problem(self, value: object) -> str | None:
        """Why `value` is no such name, in one line; None when it is one."""
        if isinstance(value, str) and re.fullmatch(self.pattern, value):
            return None
        return f"{shown(value)} is not {self.what}: {self.rule}"

    def check(self, value: object, where: str = "") -> str:
        """`value` when it is such a name; else GateError naming `where` (a file and field, an option)."""
        problem = self.problem(value)
        if problem:
            raise GateError(f"{where}: {problem}" if where else problem)
        assert isinstance(value, str)
        return value


_NAME = r"[a-z][a-z0-9-]{0,30}"
_NAME_RULE = "lower-case letters, digits and '-', starting with a letter, at most 31"
HOST = Name("a host name", _NAME, _NAME_RULE)
LINK = Name("a link name", _NAME, _NAME_RULE)
PLATFORM = Name("a platform name", _NAME, _NAME_RULE)
LAB = Name("a lab name", r"[a-z0-9][a-z0-9-]{0,19}", "1-20 lower-case letters, digits and '-'")
#: One file name of a bundle (no folder, no leading dot): what `up --from` may write in the lab's folder.
#: (A space is let through: a user's "my site.yaml" travels in bundles, and host paths are never typed.)
FILE = Name(
    "a file name",
    r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}",
    "letters, digits, ' ', '.', '_' and '-', not starting with '.', at most 100",
)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: A gateway's srcid: an FQDN (iked's parse.y types a srcid by its shape; ikedlab installs FQDN keys).
FQDN = Name(
    "an FQDN identity",
    rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*",
    "lower-case letters, digits, '-' and '.' (such as init.example.com)",
)
#: iked.conf's `lifetime … bytes N`: a number with an optional K, M or G (sbin/iked/parse.y, byte_spec).
BYTES = Name("a byte count", r"[0-9]{1,15}[KMGkmg]?", "a number with an optional K, M or G, such as 64K")
#: `impair --rate`: a rate as tc writes it; it is typed into the router's shell.
RATE = Name("a rate", r"(?i)[0-9]{1,9}(\.[0-9]{1,6})?[kmg]?(bit|bps)", "as tc writes it, e.g. 1mbit, 500kbit")
RELEASE = Name("a release", r"[0-9]{1,2}\.[0-9]{1,2}", "such as 7.9")
#: A catalogue case: its folder's name (scenarios/cases/NAME), a test's id and a path in evidence and reports.
CASE = Name("a case name", r"[a-z0-9][a-z0-9-]{0,47}", "lower-case letters, digits and '-', at most 48")
#: Each file of a case folder (case.yaml, a template) is read up to this size.
CASE_FILE_BYTES = 64 * 1024


def shown(value: object, limit: int = SHOWN) -> str:
    """A value as an error message quotes it: a string quoted with its control characters escaped and cut
    at `limit`, a number as written, a mapping or list only by its kind (its str() may be huge)."""
    if isinstance(value, str):
        text = repr(value[:limit])
        return text + ("…" if len(value) > limit else "")
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def key(value: object) -> str:
    """A mapping's key as a field path shows it (`hosts.init`): as written when it is a plain word, else
    as `shown()` quotes it."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,60}", value):
        return value
    return shown(value)


def read_text(path: Path, limit: int) -> str:
    """A user's text file: at most `limit` bytes of UTF-8. Else GateError saying why, without the file's
    name (the caller names the file, its option or field)."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise GateError(f"cannot read the file: {e.strerror}") from None
    return decode(data, limit)


def decode(data: bytes, limit: int) -> str:
    """Bytes from outside as text: at most `limit` bytes of UTF-8, or GateError saying why not."""
    if len(data) > limit:
        raise GateError(f"larger than {limit // 1024} KiB, more than ikedlab reads")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise GateError(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def regex(pattern: str, what: str) -> re.Pattern[str]:
    """A user's own regular expression (from the command line), compiled, or one line saying why not."""
    try:
        return re.compile(pattern)
    except re.error as e:
        raise GateError(f"{what} {shown(pattern)}: not a regular expression ({e})") from None
