"""The status table: readable at 80 columns with every address whole."""

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from lab.status import HostStatus, status_table

ROWS = [
    HostStatus("initlan", "linux", "running", "eth0 10.0.1.2/24", "", True),
    HostStatus(
        "init", "linux", "running", "eth0 192.0.2.1/24\neth1 10.0.1.1/24", "ESTABLISHED with resp", True
    ),
    HostStatus("inet", "linux", "running", "eth0 192.0.2.254/24\neth1 198.51.100.254/24", "", True),
    HostStatus("resp", "strongswan", "no answer", "eth0 198.51.100.1/24\neth1 10.0.2.1/24", "-", False),
    HostStatus("resplan", "linux", "stopped", "eth0 10.0.2.2/24", "", False),
]


def test_at_80_columns_no_address_is_cut():
    lab = SimpleNamespace(
        name="default",
        read=lambda: SimpleNamespace(daemons={"init": "iked 7.2-1", "resp": "strongSwan 6.0.1"}, media={}),
        run_dir=Path("/nonexistent"),
    )
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(status_table(lab, ROWS))  # type: ignore[arg-type]
    text = console.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for row in ROWS:
        for address in row.addresses.splitlines():
            assert address in text, address
