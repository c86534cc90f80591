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
    from lab.lab import HostStatus, Lab


def status_table(lab: Lab, rows: list[HostStatus] | None = None) -> Table:
    """Every host, whatever shape the lab is in (Lab.status: stopped, no answer, iked not running...)."""
    table = Table(title=f"lab {lab.name}")
    daemons = lab.state().daemons if lab.state_file.exists() else {}  # "iked 7.4-1", "iked (local build …)"
    for column in ("host", "platform", "ike daemon", "state", "addresses", "tunnel"):
        table.add_column(column)
    for row in lab.status() if rows is None else rows:
        table.add_row(row.host, row.platform, daemons.get(row.host, ""), row.state, row.addresses, row.tunnel)
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


def print_status(lab: Lab, just_verified: bool = False) -> bool:
    """Print the table; True when the lab is healthy (every host answers, every tunnel is up).
    `just_verified`: `up` has just proven the lab (Lab.verify), the table shows what it found."""
    rows = lab.status(just_verified=just_verified)
    RichConsole().print(status_table(lab, rows))
    return all(row.healthy for row in rows)


def status_text(lab: Lab) -> str:
    console = RichConsole(file=io.StringIO(), width=140, color_system=None)
    console.print(status_table(lab))
    return console.file.getvalue()  # type: ignore[attr-defined]
