"""Link impairment on the emulated Internet: loss, delay, jitter, rate and MTU, applied by the router.

The router `inet` runs Linux (in OpenBSD labs too: its topology entry says `platform: linux`), and shapes a
link with netem in both directions where the link meets the router: its egress on the link's interface, and
its ingress on that interface redirected through an ifb device that has the same netem. So `--delay 100`
adds 100 ms each way (200 ms to a round trip) and `--loss 5` drops 5 % each way. `--mtu` sets the router's
interface MTU on the link: what the router sends onto the link is fragmented, or refused with ICMP
"fragmentation needed" when it carries DF. The current impairments are kept in the run directory
(impairments.json), for `status` readers and bundles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab import gate
from lab.errors import LabError, first_and_more

if TYPE_CHECKING:
    from lab.host import Host
    from lab.lab import Lab

ROUTER = "inet"
TC = "/usr/sbin/tc"
IP = "/bin/ip"
MODPROBE = "/sbin/modprobe"
MODULES = "sch_netem sch_ingress cls_matchall act_mirred"
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0  # percent, each direction
    delay_ms: int = 0  # each direction
    jitter_ms: int = 0
    rate: str | None = None  # tc's spelling: 1mbit, 500kbit
    mtu: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.loss <= 100:
            problems.append(f"--loss {self.loss:g}: a percentage from 0 to 100")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            problems.append("--delay and --jitter are milliseconds, 0 or more")
        if self.jitter_ms and not self.delay_ms:
            problems.append("--jitter needs a --delay to vary around")
        if self.rate is not None and (problem := gate.RATE.problem(self.rate)):
            problems.append(f"--rate: {problem}")
        if self.mtu is not None and not 576 <= self.mtu <= 9000:
            problems.append(f"--mtu {self.mtu}: from 576 to 9000")
        if problems:
            message, others = first_and_more(problems)
            raise LabError(message, details=others)

    @property
    def netem(self) -> str:
        """netem's arguments; empty when only the MTU changes."""
        parts = []
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms}ms" + (f" {self.jitter_ms}ms" if self.jitter_ms else ""))
        if self.loss:
            parts.append(f"loss {self.loss:g}%")
        if self.rate:
            parts.append(f"rate {self.rate}")
        return " ".join(parts)


def impair_command(iface: str, imp: Impairment) -> str:
    """One shell line for the router: netem both ways on `iface` (through ifb), and its MTU."""
    ifb = f"ifb-{iface}"
    steps = [f"{MODPROBE} -a {MODULES} && {MODPROBE} ifb numifbs=0", clear_command(iface)]
    if imp.netem:
        steps += [
            f"{TC} qdisc add dev {iface} root netem {imp.netem}",
            f"{IP} link add {ifb} type ifb",
            f"{IP} link set {ifb} up",
            f"{TC} qdisc add dev {ifb} root netem {imp.netem}",
            f"{TC} qdisc add dev {iface} handle ffff: ingress",
            f"{TC} filter add dev {iface} parent ffff: matchall action mirred egress redirect dev {ifb}",
        ]
    steps.append(f"{IP} link set {iface} mtu {imp.mtu or DEFAULT_MTU}")
    return " && ".join(steps)


def clear_command(iface: str) -> str:
    """Everything impair_command adds, removed; quiet about what is not there."""
    return (
        f"{{ {{ {TC} qdisc del dev {iface} root; {TC} qdisc del dev {iface} ingress; "
        f"{IP} link del ifb-{iface}; }} 2>/dev/null; {IP} link set {iface} mtu {DEFAULT_MTU}; }}"
    )


def router(lab: Lab, link: str) -> tuple[Host, str]:
    """The router and its interface on `link`; a clear error when the link does not touch it."""
    assert lab.topology, "the lab is neither up nor attached"
    if link not in lab.topology.links:
        raise LabError(f"no link '{link}' in the topology (links: {', '.join(lab.topology.links)})")
    if ROUTER not in lab.topology.links[link].ends:
        wan = [name for name, lk in lab.topology.links.items() if ROUTER in lk.ends]
        raise LabError(
            f"link '{link}' does not reach the router {ROUTER}: only links through it can be impaired",
            f"links through {ROUTER}: {', '.join(wan)}",
        )
    host = lab.attach(only=[ROUTER])[ROUTER] if ROUTER not in lab.hosts else lab.hosts[ROUTER]
    if not host.platform.can("link_impairment"):
        raise LabError(f"{ROUTER} cannot impair links: {host.platform.why_not('link_impairment')}")
    return host, host.interface(link)


def impair(lab: Lab, link: str, imp: Impairment) -> None:
    host, iface = router(lab, link)
    host.check(impair_command(iface, imp))
    _save(lab.run_dir, link, imp)


def clear(lab: Lab, link: str | None = None) -> list[str]:
    """Remove the impairment of one link, or of every link through the router; return the links cleared."""
    assert lab.topology, "the lab is neither up nor attached"
    links = [link] if link else [n for n, lk in lab.topology.links.items() if ROUTER in lk.ends]
    for name in links:
        host, iface = router(lab, name)
        host.check(clear_command(iface))
        _save(lab.run_dir, name, None)
    return links


@contextmanager
def impaired(lab: Lab, link: str, **settings: object) -> Iterator[Impairment]:
    """For scenarios: `with impaired(lab, "wan1", delay_ms=100):` … the link is clean again afterwards."""
    imp = Impairment(**settings)  # type: ignore[arg-type]
    impair(lab, link, imp)
    try:
        yield imp
    finally:
        clear(lab, link)


def current(run_dir: Path) -> dict[str, dict]:
    try:
        return json.loads((run_dir / "impairments.json").read_text())
    except (OSError, ValueError):
        return {}


def _save(run_dir: Path, link: str, imp: Impairment | None) -> None:
    state = current(run_dir)
    if imp is None:
        state.pop(link, None)
    else:
        state[link] = asdict(imp)
    (run_dir / "impairments.json").write_text(json.dumps(state, indent=2))
