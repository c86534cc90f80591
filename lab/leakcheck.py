"""`make test`'s last word on evidence: no key the guests' kernels held and no PSK of the run is found in
artifacts/, in the run's labs and snapshots or in a bundle, and nothing there is readable by others.

The scenario session writes what it saw (`record`): every SA key read from the gateways' kernels after each
scenario and every key the redactor took out of a transcript, the PSKs the run registered, and the labs it
used. `python -m lab.leakcheck ARTIFACTS` then reads every file there, the members of every bundle included,
and looks for each key in any spelling (the file's hex digits run together, so `ip xfrm`'s `0x…`, iked's
4-byte groups and charon's `9F 1E …` all match) and for each PSK as written. The keys file is removed after.

Two kinds of file are not read, each by nature: a snapshot's saved memory (the guests' RAM, where the keys
live; 0600 in a 0700 folder, never copied into evidence) and a lab's `secret/` folder (the users' own
iked.conf files as given, needed to rebuild the lab). Neither leaves the machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lab import ownership, private, redact

KEYS_FILE = "leakcheck-{checkout}.json"  # in the state folder's secret/: the run's keys, until checked
NOT_READ = (private.SECRET_DIR,)  # folder names whose files are kept as given on purpose
MEMORY_SUFFIX = ".save"  # a snapshot's saved guest memory


@dataclass
class Seen:
    """What a scenario session saw: keys (hex, lower case), PSKs, and the labs it ran."""

    keys: set[str] = field(default_factory=set)
    psks: set[str] = field(default_factory=set)
    labs: set[str] = field(default_factory=set)


def keys_file(checkout: str | None = None) -> Path:
    """One per checkout: the state folder is shared by every checkout on the machine, and one checkout's
    check must neither judge another's labs (left by older code, or still running) nor take its record away
    (seen: a clean clone's `make test` failed on a worktree's labs and consumed its keys)."""
    tag = ownership.checkout_tag(checkout or ownership.CHECKOUT)
    return private.state_dir() / "secret" / KEYS_FILE.format(checkout=tag)


def record(seen: Seen) -> Path:
    """Add what this session saw to the keys file (several sessions may run before one check)."""
    path = keys_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with private.open_file(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers record at once
        old = _load(path)
        data = {
            "keys": sorted(old.keys | seen.keys),
            "psks": sorted(old.psks | seen.psks | redact.registered()),
            "labs": sorted(old.labs | seen.labs),
        }
        private.write_text(path, json.dumps(data))
    return path


def _load(path: Path) -> Seen:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return Seen()
    return Seen(set(data.get("keys", [])), set(data.get("psks", [])), set(data.get("labs", [])))


def places(artifacts: Path, labs: set[str]) -> list[Path]:
    """Where evidence of the run is: artifacts/, and each of its labs' run folders and snapshots."""
    state = private.state_dir()
    found = [artifacts]
    for lab in sorted(labs):
        found += [state / "labs" / lab, state / "snapshots" / lab]
    return [p for p in found if p.exists()]


def check(roots: list[Path], seen: Seen) -> list[str]:
    """Every problem, one line each: a file holding a key or PSK (named by kind, never quoted), or a file
    or folder others may read."""
    problems = []
    hex_psks = {p[2:].lower() for p in seen.psks if re.fullmatch(r"0x[0-9a-fA-F]{8,}", p)}
    # A key of one repeated digit is a stand-in (the throwaway SA that warms the kernel up), not a secret.
    keys = [k for k in seen.keys | hex_psks if len(k) >= 16 and len(set(k)) > 2]
    psks = [p.encode() for p in seen.psks if not re.fullmatch(r"(0x)?[0-9a-fA-F]{8,}", p)]
    for root in roots:
        for path in _walk(root):
            mode = path.lstat().st_mode
            if stat.S_IMODE(mode) & 0o077:
                problems.append(f"{path}: readable by others (mode {stat.S_IMODE(mode):04o})")
            if not stat.S_ISREG(mode) or _not_read(path):
                continue
            for name, data in _contents(path):
                digits = re.sub(rb"[^0-9a-f]", b"", data.lower()).decode()
                leaked = sum(1 for k in keys if k in digits) + sum(1 for p in psks if p in data)
                if leaked:
                    problems.append(f"{name}: holds {leaked} of the run's keys or PSKs")
    return problems


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _not_read(path: Path) -> bool:
    return path.suffix == MEMORY_SUFFIX or any(part in NOT_READ for part in path.parts)


def _contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """A file's bytes; a bundle's members one by one, named `bundle!member`."""
    if path.name.endswith(".tar.gz"):
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    if member.isfile() and (f := tar.extractfile(member)):
                        yield f"{path}!{member.name}", f.read()
            return
        except (tarfile.TarError, OSError):
            pass
    yield str(path), path.read_bytes()


def main(argv: list[str] | None = None) -> int:
    private.restrict_umask()
    args = argv if argv is not None else sys.argv[1:]
    artifacts = Path(args[0] if args else "artifacts")
    path = keys_file()
    seen = _load(path)
    if not path.exists():  # `make test` runs the scenarios first: their keys must be there
        print(f"leakcheck: no scenario session recorded its keys ({path}): nothing checked", file=sys.stderr)
        return 1
    roots = places(artifacts, seen.labs)
    problems = check(roots, seen)
    path.unlink(missing_ok=True)
    where = ", ".join(str(r) for r in roots)
    if problems:
        for line in problems:
            print(f"leakcheck: {line}", file=sys.stderr)
        return 1
    print(
        f"leakcheck: {len(seen.keys)} SA keys and {len(seen.psks)} PSKs of the run, in no file of {where};"
        " nothing there readable by others (not read: snapshots' saved memory, secret/ folders)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
