"""The iked regression catalogue: iked's features as cases, each a folder of data, run on any cell.

A case is a folder under scenarios/cases/NAME/: `case.yaml` says what it tests, its reference (the upstream
regress target it ports, an RFC, a bug), what the lab needs (secrets, certificates, a filter, IPv6) and its
steps: actions and typed checks, in order. Beside it, each gateway's daemon configuration as a jinja2
template over the lab's names, addresses and ids (`iked.conf.j2` for every iked gateway, or
`init.iked.conf.j2` for one; `swanctl.conf.j2` lets a strongSwan gateway play a role). One runner turns
folders into pytest tests (scenarios/test_catalogue.py) and runs each case on the lab restored from its warm
snapshot, then checks what the case left behind. docs/catalogue.md is the vocabulary's reference.

    case.py       the folder: case.yaml read and checked, templates found, known failures
    steps.py      the vocabulary: each step type, its fields, read strictly
    context.py    what templates and steps see of the lab (names, addresses, ids, secrets)
    pki.py        certificates and CAs as openiked's regress makes them
    judge.py      running steps on a lab's hosts; a failed check names host, command and expectation
    leftovers.py  after a case: daemons alive, nothing of the case left in the kernel
    runner.py     one case on a lab, start to finish
    cells.py      `make catalogue`: cases x cells, JUnit per cell, the matrix
    from_bundle.py  `ikedlab case NAME --from BUNDLE`: a bug report's bundle as a case folder
"""

from __future__ import annotations

from pathlib import Path

from lab import PROJECT_ROOT

#: Where the catalogue's cases live in a checkout.
CASES_DIR = PROJECT_ROOT / "scenarios" / "cases"


def case_dirs(root: Path = CASES_DIR) -> list[Path]:
    """Every case folder under `root` (a folder with a case.yaml), by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "case.yaml").is_file())
