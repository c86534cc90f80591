"""The nightly run as a whole: which groups it has (every test module of the fast, scenario, fault and
nightly suites, every interop cell, every catalogue case on every catalogue cell), and one plan dealing them
onto n shards (lab/shard.py) that each suite of `make nightly SHARD=i/n` follows, so the load is balanced
over the whole night, not suite by suite.
`python -m lab.nightly plan --shards N [--durations HISTORY] -o FILE` writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab import PROJECT_ROOT, private
from lab.catalogue.cells import load_cells, units
from lab.errors import IkedlabError
from lab.interop import cell_group, load_matrix
from lab.results import catalogue_group, suite_of_group
from lab.shard import Shard, ShardError, durations, plan

#: What a group of each suite takes when no earlier run timed it, from the measured runs in
#: docs/performance.md: fast tests 55 s over 37 modules, scenarios 174 s over 11 modules (the nightly ones
#: take minutes), the fault suite 158 s over 3 modules, interop 807 s over 4 cells, a catalogue case's
#: median 29 s (its first full cell, load 9); nightly/ runs the scenarios three times.
PRIOR_SECONDS = {
    "fast": 1.5, "scenarios": 20.0, "faults": 50.0, "interop": 200.0, "catalogue": 30.0, "nightly": 600.0
}  # fmt: skip


def prior(group: str) -> float:
    return PRIOR_SECONDS.get(suite_of_group(group), 20.0)


def nightly_groups() -> dict[str, list[str]]:
    """Every group of a nightly run, from the checkout alone (so every machine finds the same): each test
    module of the fast, scenario and fault suites, each interop cell, each catalogue case on each cell."""
    groups: dict[str, list[str]] = {}
    for folder in ("tests", "scenarios", "faults", "nightly"):
        for module in sorted((PROJECT_ROOT / folder).glob("test_*.py")):
            groups[f"{folder}/{module.name}"] = []
    for cell in load_matrix().cells:
        groups[cell_group(cell)] = []
    for catalogue_cell in load_cells():
        for unit in units([]):
            groups[catalogue_group(catalogue_cell.name, unit)] = []
    return groups


def main(argv: list[str] | None = None) -> int:
    private.restrict_umask()
    parser = argparse.ArgumentParser(prog="python -m lab.nightly", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("plan", help="one plan for a whole nightly run, for every shard to follow")
    make.add_argument("--shards", required=True, help="N, or I/N (the N is used)")
    make.add_argument("--durations", default=None, help="earlier runs' results (a folder or files)")
    make.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        count = int(args.shards) if args.shards.isdigit() else Shard.parse(args.shards, "--shards").count
        if count < 1:
            raise ShardError(f"--shards={args.shards}: expected a positive number of shards")
        made = plan(nightly_groups(), count, durations(args.durations), prior)
    except IkedlabError as e:
        print("\n".join(e.lines("lab.nightly")), file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(made.to_dict(), indent=1) + "\n")
    for index, load in enumerate(made.loads(), 1):
        print(f"shard {index}/{count}: {len(made.groups(index))} groups, ~{load:.0f} s")
    print(f"plan {made.fingerprint} in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
