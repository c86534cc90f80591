"""Scenarios: the guide's checks against a live lab.

The lab, its options (--platform, --lab-name, --topology, --keep-lab, --artifacts) and each test's evidence
folder come from ikedlab's pytest plugin (lab/pytest_plugin.py), as they would in any repository. Here: every
scenario keeps its evidence, --reverse, the interop matrix's known failures (--known-failures) as strict
xfails, a whole cell's included when its lab does not come up for the known reason, and the regression
catalogue's --cases and --cell (scenarios/test_catalogue.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.lab import Lab
from lab.pytest_plugin import session_lab


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ikedlab")
    group.addoption(
        "--known-failures",
        default=None,
        help="a JSON list of {test, reason, reference}: known interop failures, run as strict xfails",
    )
    group.addoption(
        "--reverse", action="store_true", help="run the scenarios in reverse order (isolation check)"
    )
    group.addoption(
        "--cases", default="", help="catalogue: only these cases (names of scenarios/cases/ folders)"
    )
    group.addoption(
        "--cell",
        default="iked-7.2",
        help="catalogue: the cell this lab is (lab/catalogue/cells.yaml); a case's known failures name cells",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--reverse runs the scenarios backwards; known interop failures (lab/interop.yaml, per cell) become
    strict xfails naming their reference."""
    if config.getoption("--reverse"):
        items.reverse()
    path = config.getoption("--known-failures")
    if not path:
        return
    for known in json.loads(Path(path).read_text()):
        for item in items:
            if known["test"] in (item.name, "*"):  # "*": the whole cell (its lab does not come up)
                reason = f"{known['reason']} ({known['reference']})"
                # A whole cell xfails only through the lab fixture's pytest.xfail, which it calls when the
                # lab's error matches the entry's lab_error: any other failure stays a failure.
                raises = pytest.xfail.Exception if known["test"] == "*" else None
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))


def _known_cell_failure(config: pytest.Config, why: str) -> str:
    """The reason of a known failure of the whole interop cell ("*") whose `lab_error` matches `why` (the
    lab's error), or "": a cell known not to come up for one reason still fails for any other."""
    path = config.getoption("--known-failures")
    known = json.loads(Path(path).read_text()) if path else []
    return next(
        (
            f"{k['reason']} ({k['reference']})"
            for k in known
            if k["test"] == "*" and re.search(k.get("lab_error", "$^"), why)
        ),
        "",
    )


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, record_testsuite_property: Any) -> Iterator[Lab]:
    """The plugin's session lab; a known interop failure of the whole cell xfails (see the marker)."""

    def known(why: str) -> None:
        if whole_cell := _known_cell_failure(request.config, why):
            pytest.xfail(f"{why}; known: {whole_cell}")

    yield from session_lab(request, record_testsuite_property, did_not_come_up=known)


@pytest.fixture(autouse=True)
def every_scenario_keeps_evidence(evidence: Path) -> Path:
    """The plugin's evidence folder for every scenario, whether it names it or not."""
    return evidence
