"""What a human needs to tell why a lab misbehaved, gathered into a folder: transcripts, serial logs and
rendered configs from the run folder, and from each gateway iked's log, `ikectl show sa` and the kernel's SA
state (scrubbed of SA keys). A failed `up` keeps it in RUN_DIR/evidence before its guests go; scenarios
keep it per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from lab import progress, redact
from lab.errors import IkedlabError
from lab.host import Host
from lab.redact import scrub

PROBLEM = "(evidence)"  # save's key for what could not be had
TAIL = 8  # lines of iked's log shown beside a failure
TIMEOUT = 15.0  # seconds per reading: a guest that does not answer must not hold up cleanup


def save(run_dir: Path, hosts: Iterable[Host], folder: Path, keys: set[str] | None = None) -> dict[str, str]:
    """Copy transcripts, serial logs and rendered configs to `folder`; fetch from each gateway iked's log,
    `ikectl show sa` and the kernel's SA state. Returns each gateway's last lines of iked's log (and,
    under PROBLEM, what could not be had). Best effort: a dead guest does not stop the rest. `keys`: add
    the SA keys the kernels printed (before they are redacted) for a leak check (lab/leakcheck.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    tails: dict[str, str] = {}
    problems: list[str] = []
    for sub in ("console", "serial", "configs"):
        if (run_dir / sub).is_dir() and folder != run_dir / sub:
            redact.copy_tree(run_dir / sub, folder / sub)  # a serial log is virtlogd's: never redacted yet
    for host in (h for h in hosts if h.spec.ipsec):
        for suffix, command in host.evidence_commands().items():
            try:
                said = host.run(command, timeout=TIMEOUT).output
                text = scrub(said)  # no SA keys kept
                if keys is not None:
                    keys.update(redact.found(said))
            except IkedlabError as e:
                problems.append(f"{host.name}: {suffix} not fetched ({e.message})")
                continue
            (folder / f"{host.name}.{suffix}").write_text(text)
            if suffix == "iked.log":
                tails[host.name] = "\n".join(text.strip().splitlines()[-TAIL:])
    if problems:
        tails[PROBLEM] = "; ".join(problems)
    return tails


def keep_after_failed_up(run_dir: Path, hosts: Iterable[Host]) -> None:
    """After a failed `up`, before any guest goes: what a human needs to tell why, in RUN_DIR/evidence."""
    folder = run_dir / "evidence"
    shutil.rmtree(folder, ignore_errors=True)
    tails = save(run_dir, hosts, folder)
    if (problem := tails.get(PROBLEM)) is not None:
        progress.say(f"  evidence: {problem}")
    progress.say(f"  evidence of this failed up (iked logs, SAs, transcripts): {folder}")
