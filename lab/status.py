"""A lab's status: one row per host (state, addresses, tunnel), whatever shape the lab is in, and the table
of them printed by `ikedlab status` and `up`, and kept as text in evidence bundles."""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console as RichConsole
from rich.table import Table

from lab import settings as defaults
from lab.errors import ConsoleBusy, IkedlabError
from lab.impair import Impairment, current

if TYPE_CHECKING:
    from lab.lab import Lab


@dataclass(frozen=True)
class HostStatus:
    """One row of `ikedlab status`."""

    host: str
    platform: str
    state: str  # running, stopped, no answer, busy: in use by ...
    addresses: str
    tunnel: str  # "" for a host that is no gateway
    healthy: bool


def rows(
    lab: Lab, answer_timeout: float = defaults.STATUS_ANSWER, just_verified: bool = False
) -> list[HostStatus]:
    """Every host's state, whatever shape the lab is in: a stopped guest, a console that does not
    answer (or another ikedlab process holds for longer than `answer_timeout`), iked not running.
    `just_verified` (`up`, right after `verify`): what verify read is the answer, asked no second time."""
    topology = lab.read().topology
    guests = lab.guests
    running = guests.running()
    proven = lab.proven if just_verified else set()

    def one(name: str) -> HostStatus:
        platform = guests.platforms[name]
        spec = topology.host(name)
        addresses = "\n".join(f"{platform.interface_name(i.index)} {i.address}" for i in spec.interfaces)
        peer = topology.peer_of(spec).name if spec.ipsec else None
        row = HostStatus(name, platform.name, "stopped", addresses, "", healthy=False)
        if name not in running:
            return dataclasses.replace(row, tunnel="-" if peer else "")
        if name in proven:
            tunnel = f"ESTABLISHED with {peer}" if peer else ""
            return dataclasses.replace(row, state="running", tunnel=tunnel, healthy=True)
        try:
            host = guests.open_host(name, answer_timeout)
            host.console.attach(answer_timeout)
        except ConsoleBusy as e:
            return dataclasses.replace(row, state=f"busy: in use by {e.holder}")
        except IkedlabError:
            return dataclasses.replace(row, state="no answer")
        row = dataclasses.replace(row, state="running", healthy=peer is None)
        if peer is None:
            return row
        try:
            result = host.run(platform.sa_command(), timeout=answer_timeout)
        except IkedlabError:
            return dataclasses.replace(row, state="no answer")
        if not result.ok:
            return dataclasses.replace(row, tunnel="iked not running")
        sas = platform.parse_sa(result.output)
        if sas.established:
            return dataclasses.replace(row, tunnel=f"ESTABLISHED with {peer}", healthy=True)
        return dataclasses.replace(row, tunnel=f"down (peer {peer}): {sas.describe()}")

    found: dict[str, HostStatus] = {}

    def fill(name: str) -> None:
        found[name] = one(name)

    with ThreadPoolExecutor(max_workers=len(topology.hosts)) as pool:
        list(pool.map(fill, topology.hosts))
    return [found[name] for name in topology.hosts]


def status_table(lab: Lab, shown: list[HostStatus] | None = None) -> Table:
    """Every host, whatever shape the lab is in (Lab.status: stopped, no answer, iked not running...)."""
    # Readable at 80 columns, nothing cut: no vertical rules, the IKE daemon under the platform, one address
    # a line, never folded (80 columns cut "198.51.100.254/24" to "198.51.100.254…" before); the tunnel
    # wraps at its words.
    table = Table(title=f"lab {lab.name}", box=box.SIMPLE_HEAD, pad_edge=False)
    blueprint = lab.read()
    daemons = blueprint.daemons  # "iked 7.4-1", "iked (local build …)"
    table.add_column("host", no_wrap=True)
    table.add_column("platform", overflow="fold")
    table.add_column("state", overflow="fold")
    table.add_column("addresses", no_wrap=True)
    table.add_column("tunnel", overflow="fold")
    for row in rows(lab) if shown is None else shown:
        daemon = daemons.get(row.host, "")
        platform = f"{row.platform}\n{daemon}" if daemon else row.platform
        table.add_row(row.host, platform, row.state, row.addresses, row.tunnel)
    impaired = impairments(lab.run_dir)
    # An image built with `image build --insecure`.
    unverified = sorted({m.unverified for m in blueprint.media.values() if m.unverified})
    notes = [f"WARNING: {note}" for note in unverified]
    if impaired:
        notes.append("impaired: " + "; ".join(f"{link} {how}" for link, how in impaired.items()))
    if notes:
        table.caption = "\n".join(notes)
    return table


def impairments(run_dir: Path) -> dict[str, str]:
    """The links `ikedlab impair` changed, each with netem's words (and the MTU)."""
    described = {}
    for link, settings in current(run_dir).items():
        imp = Impairment(**settings)
        described[link] = ", ".join(filter(None, [imp.netem, f"mtu {imp.mtu}" if imp.mtu else ""]))
    return described


def print_status(lab: Lab, just_verified: bool = False) -> bool:
    """Print the table; True when the lab is healthy (every host answers, every tunnel is up).
    `just_verified`: `up` has just proven the lab (Lab.verify), the table shows what it found."""
    found = rows(lab, just_verified=just_verified)
    RichConsole().print(status_table(lab, found))
    return all(row.healthy for row in found)


def status_text(lab: Lab) -> str:
    console = RichConsole(file=io.StringIO(), width=140, color_system=None)
    console.print(status_table(lab))
    return console.file.getvalue()  # type: ignore[attr-defined]
