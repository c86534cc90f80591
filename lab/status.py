"""The status table of a lab: hosts, platforms, state, addresses and tunnel; printed by `ikedlab status` and
`up`, and kept as text in evidence bundles."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console as RichConsole
from rich.table import Table

from lab.impair import Impairment, current

if TYPE_CHECKING:
    from lab.lab import Lab


def status_table(lab: Lab) -> Table:
    assert lab.topology, "the lab is neither up nor attached"
    running = {d.host: d for d in lab.domains()}
    table = Table(title=f"lab {lab.name}")
    daemons = lab.state().daemons if lab.state_file.exists() else {}  # "iked 7.4-1", "iked (local build …)"
    for column in ("host", "platform", "ike daemon", "state", "addresses", "tunnel"):
        table.add_column(column)
    for name, host in lab.hosts.items():
        tunnel = ""
        if host.spec.ipsec:
            sas = host.sas()
            peer = lab.topology.peer_of(host.spec).name
            tunnel = f"ESTABLISHED with {peer}" if sas.established else f"down (peer {peer})"
        addresses = ", ".join(
            f"{host.platform.interface_name(i.index)} {i.address}" for i in host.spec.interfaces
        )
        state = "running" if name in running and running[name].running else "stopped"
        table.add_row(name, host.platform.name, daemons.get(name, ""), state, addresses, tunnel)
    impaired = impairments(lab.run_dir)
    if impaired:
        table.caption = "impaired: " + "; ".join(f"{link} {how}" for link, how in impaired.items())
    return table


def impairments(run_dir: Path) -> dict[str, str]:
    """The links `ikedlab impair` changed, each with netem's words (and the MTU)."""
    described = {}
    for link, settings in current(run_dir).items():
        imp = Impairment(**settings)
        described[link] = ", ".join(filter(None, [imp.netem, f"mtu {imp.mtu}" if imp.mtu else ""]))
    return described


def print_status(lab: Lab) -> None:
    RichConsole().print(status_table(lab))


def status_text(lab: Lab) -> str:
    console = RichConsole(file=io.StringIO(), width=140, color_system=None)
    console.print(status_table(lab))
    return console.file.getvalue()  # type: ignore[attr-defined]
