"""The one redactor: every text ikedlab writes for people (transcripts, raw console logs, evidence folders,
bundles, reports, error messages) passes through `scrub`, so evidence can leave the machine.

It knows the shapes key material takes in what the lab's programs print (each read in the program's source):
- `ip xfrm state`: `enc cbc(aes) 0x…`, `auth-trunc hmac(sha384) 0x… 192`, `aead rfc4106(gcm(aes)) 0x… 128`;
- iked (`iked -dvvv`, iked/util.c print_hex): lines of 4-byte groups of hex, `0f3a1b2c 44556677 …`, and
  print_hexval's `0x…`;
- charon (strongSwan's %B, utils/printf_hook): `   0: 9F 1E … ` then the bytes as ASCII;
- pluto (libreswan's lib/libswan/llog_dump.c): `|   e3 5c 8c 1f  3d 57 f8 a1 …   ascii`;
- long hex with or without `0x`, base64 key blobs (`0s…`, the key lines of a PEM block), colon-separated
  private key bytes (`openssl pkey -text`), PEM private keys (a block cut short is dropped to the end);
- pre-shared keys where configurations say them (iked.conf `psk`, swanctl.conf `secret =`, ipsec.secrets
  `PSK`), and the PSKs of the running lab wherever they appear (`register`, `register_config`).

Registered secrets are the process's, not one lab's: every writer must see them, and a secret of another
lab in the same process is still a secret. `IKEDLAB_SHOW_SECRETS=1` (`ikedlab --show-secrets`) turns
redaction off, except for private keys, for a user who debugs on purpose (e.g. to decrypt a capture).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from lab import private, settings

MARK = "[redacted]"
PRIVATE_KEY_MARK = "[a private key was here; ikedlab never keeps one]"
MIN_LITERAL = 6  # shorter registered secrets are redacted only where a configuration names them (psk "…")

_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----")
_PEM_INLINE = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----")


def _keep(group: str) -> Callable[[re.Match[str]], str]:
    """A substitution that keeps the named group and redacts the rest of the match."""
    return lambda m: m.group(group) + MARK


# (pattern, replacement); each pattern works on one line (a stream is redacted line by line).
_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # ip xfrm: the algorithm's key, whatever its length (DES keys are 16 hex digits).
    (re.compile(r"(?P<k>\b(?:enc|auth|auth-trunc|aead|comp)\s+\S+\s+0x)[0-9a-fA-F]+"), _keep("k")),
    # PSKs where a configuration names them: iked.conf (`psk`, lower case as its grammar has it),
    # ipsec.secrets (`: PSK "…"`), swanctl.conf (`secret = …`).
    (re.compile(r"(?P<k>\bpsk\s+)(?:\"[^\"]*\"|'[^']*'|[^\s\\\"',;]+)"), _keep("k")),
    (re.compile(r"(?P<k>:\s*PSK\s+)(?:\"[^\"]*\"|'[^']*'|\S+)"), _keep("k")),
    (re.compile(r"(?P<k>\bsecret\s*=(?!>)\s*)\S.*"), _keep("k")),
    # charon's byte dump line: `   0: 9F 1E … ` then ASCII; pluto's: `|   e3 5c 8c 1f  3d 57 …   ascii`.
    (re.compile(r"(?P<k>(?:\b\d+:|\|) +)(?:[0-9a-fA-F]{2} {1,3})*[0-9a-fA-F]{2}\b.*"), _keep("k")),
    # Any other run of four or more spaced bytes, up to the end of the line (an ASCII column follows).
    (re.compile(r"(?P<k>(?:^|\s))(?:[0-9a-fA-F]{2} {1,2}){3,}[0-9a-fA-F]{2}\b.*"), _keep("k")),
    # iked's print_hex: 4-byte groups; all but the last exactly 8 digits; alone on the line (or after a log
    # prefix ending in ': ').
    (
        re.compile(r"(?P<k>^\s*|: )(?:[0-9a-f]{8} ){1,7}[0-9a-f]{2,8}\s*$|(?P<j>^\s*)[0-9a-f]{8}\s*$"),
        lambda m: (m.group("k") or m.group("j") or "") + MARK,
    ),
    # Colon-separated key bytes (openssl pkey -text): eight or more, lower case (fingerprints are not).
    (re.compile(r"(?:\b[0-9a-f]{2}:){7,}[0-9a-f]{0,2}"), MARK),
    # Long hex: with 0x (SA keys, print_hexval), or bare; not a digest that says so (sha256:…, a commit).
    (re.compile(r"0x[0-9a-fA-F]{32,}"), "0x" + MARK),
    (
        re.compile(r"(?P<k>sha(?:1|224|256|384|512)[:=] ?|\"commit\": \"|commit )?\b[0-9a-fA-F]{32,}\b"),
        lambda m: m.group(0) if m.group("k") else MARK,
    ),
    # Base64 key blobs as libreswan and strongSwan write them (`0s…`).
    (re.compile(r"\b0s[A-Za-z0-9+/]{16,}={0,2}"), "0s" + MARK),
]

_lock = threading.Lock()
_secrets: set[str] = set()
_witnessed: set[str] | None = None
_literal: re.Pattern[str] | None = None
# Where configurations say a PSK: iked.conf / ipsec.secrets `psk VALUE` (quoted, 0x…, a word or a $macro)
# and swanctl.conf `secret = VALUE`. The value is the group that matched.
_CONFIG_PSK = re.compile(
    r"\bpsk\s+(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<word>[^\s\\\"',;]+))"
    r"|:\s*PSK\s+(?:\"(?P<pdq>[^\"]*)\"|'(?P<psq>[^']*)'|(?P<pword>\S+))"
    r"|\bsecret\s*=(?!>)\s*(?:\"(?P<sdq>[^\"]*)\"|(?P<sword>\S+))"
)


def showing() -> bool:
    """The user asked for secrets in clear (`--show-secrets`): only private keys are still removed."""
    return settings.show_secrets()


def register(*secrets: str) -> None:
    """Secrets of the running lab (a PSK) that must never be written anywhere ikedlab writes.

    A hex secret (`0x…`) is also redacted without its prefix and in either case."""
    global _literal
    with _lock:
        for secret in secrets:
            if len(secret) >= MIN_LITERAL:
                _secrets.add(secret)
                if re.fullmatch(r"0x[0-9a-fA-F]+", secret):
                    _secrets.add(secret[2:])
        alternatives = sorted(_secrets, key=len, reverse=True)
        _literal = re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE) if alternatives else None


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def _psk_spans(config: str) -> list[tuple[int, int, str]]:
    """(start, end, value) of every PSK value a configuration holds; a `psk $macro` points at the macro's
    definition (`macro = "value"`), whose value is the secret."""
    spans = []
    for m in _CONFIG_PSK.finditer(config):
        name = next(n for n, v in m.groupdict().items() if v is not None)
        value = m.group(name)
        if value.startswith("$"):
            definition = re.search(
                rf"^\s*{re.escape(value[1:])}\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|(\S+))", config, re.MULTILINE
            )
            if definition:
                group = next(i for i in (1, 2, 3) if definition.group(i) is not None)
                spans.append((definition.start(group), definition.end(group), definition.group(group)))
            continue
        if value:
            spans.append((m.start(name), m.end(name), value))
    return spans


def psks_in(config: str) -> list[str]:
    """The pre-shared keys a configuration names (iked.conf, swanctl.conf, ipsec.secrets), as written."""
    return list(dict.fromkeys(value for _, _, value in sorted(_psk_spans(config))))


def register_config(config: str) -> list[str]:
    """Register every PSK a configuration file names; returns them."""
    found = psks_in(config)
    register(*found)
    return found


def witness() -> set[str]:
    """From now on every SA key `scrub` takes out is also added to the set returned (the same set each
    call): the keys a leak check looks for afterwards (lab/leakcheck.py)."""
    global _witnessed
    with _lock:
        if _witnessed is None:
            _witnessed = set()
        return _witnessed


def scrub(text: str) -> str:
    """`text` without key material or the lab's secrets (private keys only, under --show-secrets)."""
    if _witnessed is not None:
        _witnessed.update(found(text))
    out: list[str] = []
    scrubber = _Lines()
    for line in text.splitlines(keepends=True):
        out.append(scrubber.line(line))
    return "".join(out)


def scrub_bytes(data: bytes) -> bytes:
    """`scrub` for bytes in any encoding: what is not UTF-8 passes through unchanged."""
    return scrub(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def found(text: str) -> set[str]:
    """The key material `scrub` removes from `text` (hex keys of `ip xfrm state`, dump lines…): what a
    leak check looks for elsewhere afterwards."""
    keys = set()
    for line in text.splitlines():
        for m in re.finditer(r"\b(?:enc|auth|auth-trunc|aead)\s+\S+\s+0x([0-9a-fA-F]{16,})", line):
            keys.add(m.group(1).lower())
    return keys


def placeholders(configs: dict[str, str]) -> tuple[dict[str, str], int]:
    """Configuration files with every PSK replaced by a placeholder, one per distinct secret across all the
    files (two gateways that shared a PSK still share one), and how many secrets were replaced: a copy that
    keeps the configuration's shape and equalities and can leave the machine."""
    numbers: dict[str, int] = {}
    replaced = {}
    for name, text in configs.items():
        out, last = [], 0
        for start, end, value in sorted(_psk_spans(text)):
            number = numbers.setdefault(value, len(numbers) + 1)
            quoted = text[start - 1 : start] in ('"', "'")
            head = text[last : start - 1] if quoted else text[last:start]
            out.append(f'{head}"ikedlab-redacted-psk-{number}"')
            last = end + 1 if quoted else end
        replaced[name] = "".join(out) + text[last:]
    return replaced, len(numbers)


BINARY_SUFFIXES = (".pcap", ".qcow2", ".save", ".img", ".gz")


def copy_tree(source: Path, target: Path) -> None:
    """Copy a folder of evidence (transcripts, serial logs, configs) through the redactor: text files are
    scrubbed on the way (a serial log is virtlogd's, never redacted as written), binary ones copied as
    they are. Files are the user's alone (0600); links are not followed."""
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        if path.suffix not in BINARY_SUFFIXES and b"\0" not in data[:8192]:
            data = scrub_bytes(data)
        private.write_bytes(dest, data)


class _Lines:
    """Line-by-line redaction with the one piece of state a line cannot carry: inside a PEM private key."""

    def __init__(self) -> None:
        self.in_key: str | None = None  # the PEM label whose END line we wait for

    def line(self, line: str) -> str:
        if self.in_key is not None:
            if f"-----END {self.in_key}PRIVATE KEY-----" in line:
                self.in_key = None
                return line[line.index("-----END ") :].split("-----", 3)[-1]  # what follows the END marker
            return ""
        line = _PEM_INLINE.sub(PRIVATE_KEY_MARK, line)
        if m := _PEM_BEGIN.search(line):
            self.in_key = m.group(1)
            ending = "\n" if line.endswith("\n") else ""
            return line[: m.start()] + PRIVATE_KEY_MARK + ending
        if showing():
            return line
        ending = line[len(line.rstrip("\r\n")) :]
        body = line[: len(line) - len(ending)]
        for pattern, replacement in _RULES:
            body = pattern.sub(replacement, body)
        literal = _literal
        if literal is not None:
            body = literal.sub(MARK, body)
        return body + ending


class RedactingLog:
    """A binary log file (pexpect's logfile_read) that is redacted line by line as it is written.

    A line is held until its end arrives, so a key split across two reads is still seen whole; a line longer
    than LINE_LIMIT is written as it is redacted so far. `close()` writes what is held."""

    LINE_LIMIT = 65536

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self._held = b""
        self._lines = _Lines()

    def write(self, data: bytes) -> int:
        self._held += data
        *complete, self._held = self._held.split(b"\n")
        if len(self._held) > self.LINE_LIMIT:
            complete.append(self._held)
            self._held = b""
            last = True
        else:
            last = False
        for i, line in enumerate(complete):
            end = b"" if last and i == len(complete) - 1 else b"\n"
            text = self._lines.line(line.decode("utf-8", "surrogateescape") + end.decode())
            self.out.write(text.encode("utf-8", "surrogateescape"))
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self._held:
            text = self._lines.line(self._held.decode("utf-8", "surrogateescape"))
            self.out.write(text.encode("utf-8", "surrogateescape"))
            self._held = b""
        self.out.close()
