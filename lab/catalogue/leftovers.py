"""After every case, as strongSwan's and libreswan's test harnesses do: was the daemon well, and did the
case leave anything behind?

Before the case's daemons start, each gateway's kernel is emptied (`ipsecctl -F` in the regress's words)
and read: that is its baseline, the provisioned lab's kernel without an IKE daemon. After the steps:
- health: the daemon still runs on every gateway that started one, its log (since the case started it) has
  none of the platform's crash words (iked's parent: "lost child: … terminated; signal 11"), and the kernel
  logged no crashed process (Linux: "iked[212]: segfault at …") that it had not logged before;
- leftovers: the daemons are stopped, the way the case started them, and each kernel must be back to its
  baseline: any SA or flow beyond it is something the case (or the daemon) left behind.
A case that leaks fails with LeftoverFound, saying on which host what was left.

One kind of leftover is iked's known bug rather than the case's: the SPI iked reserves (SADB_GETSPI) for the
child SA of an IKE_AUTH it sends stays in the kernel, without keys, when that exchange never completes (the
peer refused it, or both sides initiated at once and the other exchange won), because iked deletes only the
child SAs it loaded. The kernel expires such a larval SA after 30 s. It is reported with every case it shows
in (the case's log and the test's output), never a verdict: which of two simultaneous exchanges wins is
timing, and a verdict must not be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab.catalogue.judge import read_kernel
from lab.errors import IkedlabError
from lab.host import Host
from lab.parallel import in_parallel
from lab.provision import stop_ike
from lab.readings import KernelState


class LeftoverFound(IkedlabError):
    """A case left state behind, or its daemon did not survive it."""


@dataclass
class Baseline:
    kernel: dict[str, KernelState]  # per gateway, emptied, before the case's daemons start
    crashes: dict[str, set[str]]  # per gateway, the crash lines the system already kept


def _crash_lines(host: Host) -> set[str]:
    command = host.platform.crash_evidence_command()
    if command is None:
        return set()
    return {line.strip() for line in host.run(command).output.splitlines() if line.strip()}


def empty_kernels(gateways: list[Host]) -> Baseline:
    """Empty each gateway's SAD and SPD and read what is left: the baseline the case must return to."""
    kernel: dict[str, KernelState] = {}
    crashes: dict[str, set[str]] = {}

    def one(h: Host) -> None:
        p = h.platform
        # One round trip: emptied, then read.
        kernel[h.name] = p.parse_kernel_state(
            h.check(f"{p.kernel_flush_command()} && {{ {p.kernel_state_command()}; }}").output
        )
        crashes[h.name] = _crash_lines(h)

    in_parallel(gateways, one)
    return Baseline(kernel, crashes)


def check_health(gateways: list[Host], baseline: Baseline, daemons_started: bool) -> None:
    problems: dict[str, list[str]] = {}

    def one(h: Host) -> None:
        found = problems.setdefault(h.name, [])
        if daemons_started and not h.run(h.platform.ike_running_command()).ok:
            found.append(f"{h.name}: the IKE daemon no longer runs (`{h.platform.ike_running_command()}`)")
        crash = re.compile(h.platform.facts.crash_log)
        died = [line.strip() for line in h.iked_log(h.ike_log_mark).splitlines() if crash.search(line)]
        if died:
            found.append(f"{h.name}: the daemon's log says a process died: {died[0]}")
        new = sorted(_crash_lines(h) - baseline.crashes.get(h.name, set()))
        if new:
            found.append(f"{h.name}: the kernel logged a crashed process: {new[0]}")

    in_parallel(gateways, one)
    listed = [p for h in gateways for p in problems.get(h.name, [])]
    if listed:
        raise LeftoverFound(f"after the case: {'; '.join(listed)}")


#: The larval leftover's cause, said beside every one found (see the module's docstring).
LARVAL_KNOWN = (
    "iked's known leak: an SPI reserved for an IKE_AUTH that never completed (openiked-portable "
    "iked/config.c config_free_childsas() deletes only loaded child SAs; the kernel expires it in 30 s)"
)


def stop_and_check_leftovers(gateways: list[Host], baseline: Baseline) -> list[str]:
    """Stop the daemons, then each kernel must hold nothing beyond its baseline; LeftoverFound when it does.
    Returns what was left that is iked's known leak (larval SAs), one line per host, for the case's log."""
    stop_ike(gateways)
    problems: dict[str, str] = {}
    known: dict[str, str] = {}

    def one(h: Host) -> None:
        command, now = read_kernel(h)
        left = now.beyond(baseline.kernel.get(h.name, KernelState()))
        larval = KernelState(tuple(sa for sa in left.sas if sa.larval))
        left = KernelState(tuple(sa for sa in left.sas if not sa.larval), left.policies)
        if not left.empty:
            problems[h.name] = f"{h.name} (`{command}`): {left.describe()}"
        if not larval.empty:
            known[h.name] = f"{h.name}: {larval.describe()} — {LARVAL_KNOWN}"

    in_parallel(gateways, one)
    listed = [problems[h.name] for h in gateways if h.name in problems]
    if listed:
        raise LeftoverFound(f"left in the kernel after the IKE daemons stopped: {'; '.join(listed)}")
    return [known[h.name] for h in gateways if h.name in known]
