"""`make catalogue`: the catalogue's cases on every cell, one lab per cell, one cell at a time.

A cell (lab/catalogue/cells.yaml) is the guide's lab with init and resp on two sides of the interop matrix
(lab/interop.yaml): iked 7.2 on both, 7.4 on both, a local build, iked against strongSwan or libreswan,
OpenBSD. Each cell runs scenarios/test_catalogue.py in its own pytest process on its own lab (named after the
checkout and the cell, so each keeps its warm snapshot for the next run) and leaves under
artifacts/catalogue/<cell>/ its JUnit report, the pytest output and each case's evidence folder. The matrix
case x cell (verdict and seconds) is printed, written to matrix.txt and summary.json, and drawn by the HTML
report (lab/report.py). A cell whose platform has no image here, or `iked-source` without IKED_SOURCE, is
shown as not run.

`--shard I/N` (make catalogue SHARD=i/n) runs the I-th of N disjoint parts of the cases x cells: the unit
dealt (lab/shard.py) is one case on one cell, the runner's own tests count as cases, and a shard brings up
the lab of each cell it was dealt a case of, running the rest of that cell's cases deselected.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import PROJECT_ROOT, private, results
from lab.catalogue import CASES_DIR, case_dirs
from lab.errors import IkedlabError
from lab.interop import Cell, cell_topology, load_matrix, unavailable
from lab.ownership import checkout_tag
from lab.results import catalogue_group
from lab.shard import RECORD_SUFFIX, Record, Shard, add_options, choose

CELLS_FILE = Path(__file__).with_name("cells.yaml")
CELL_TIMEOUT = 3600  # seconds: one cell's whole catalogue before it is reported stuck
SOURCE_VARIABLE = "IKED_SOURCE"
TEST_MODULE = "scenarios/test_catalogue.py"
RECORD_NAME = f"catalogue{RECORD_SUFFIX}"  # beside the cells' folders: what this shard was dealt


@dataclass(frozen=True)
class CatalogueCell:
    name: str
    sides: Cell | None  # None: the guide's lab as `make test` runs it
    source: bool = False  # both gateways run a build of $IKED_SOURCE

    @property
    def lab_name(self) -> str | None:
        """Its own scenario lab (warm snapshot kept per cell); None: the default scenario lab's."""
        if self.sides is None and not self.source:
            return None
        return f"scn-{checkout_tag()}-{hashlib.sha256(self.name.encode()).hexdigest()[:4]}"


def load_cells(path: Path = CELLS_FILE) -> list[CatalogueCell]:
    sides = {s.name: s for c in load_matrix().cells for s in (c.init, c.resp)}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise IkedlabError(f"{path}: unreadable ({e})") from None
    cells = []
    for name, raw in (data.get("cells") or {}).items():
        source = False
        if isinstance(raw, dict):
            source = raw.get("source") is True
            raw = raw.get("sides")
        if raw == "guide":
            cells.append(CatalogueCell(str(name), None, source))
            continue
        if not isinstance(raw, list) or len(raw) != 2 or not all(r in sides for r in raw):
            raise IkedlabError(
                f"{path}: cells.{name}: expected guide or [INIT, RESP] from {', '.join(sides)}"
            )
        cells.append(CatalogueCell(str(name), Cell(sides[raw[0]], sides[raw[1]]), source))
    if not cells:
        raise IkedlabError(f"{path}: cells: none")
    return cells


def why_not_run(cell: CatalogueCell) -> str | None:
    if cell.source and not os.environ.get(SOURCE_VARIABLE):
        return f"no source tree: set {SOURCE_VARIABLE}=DIR (an OpenIKED portable checkout)"
    if cell.sides is not None:
        return unavailable(cell.sides)
    return None


@dataclass
class CaseResult:
    verdict: str  # lab.results' words: passed, failed, error, skipped, xfailed
    seconds: float  # the case's own: the session's lab bring-up is not charged to the first one
    message: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # where its time went (runner.Outcome.phases)


@dataclass
class CellOutcome:
    cell: str
    results: dict[str, CaseResult]
    wall: float
    note: str = ""


#: What test_catalogue.py writes beside a case's evidence: the seconds of each phase of the case.
PHASES_FILE = "phases.json"


def read_results(junit: Path, cell: str) -> dict[str, CaseResult]:
    """A cell's JUnit report (read by lab.results, the one reader) -> each case's verdict, own seconds,
    message, and the phases its evidence folder records."""
    suite = results.SuiteFile(results.CATALOGUE, f"Catalogue {cell}", junit, cell, junit.parent / "evidence")
    messages = {c.case: c.message for c in results.read_junit(junit)}
    found = {}
    for row in results.rows_of(suite):
        name = row.case.rsplit("::", 1)[-1]
        if not name.startswith("test_case["):
            continue
        phases_file = suite.evidence / name / PHASES_FILE if suite.evidence else None
        try:
            phases = json.loads(phases_file.read_text()) if phases_file else {}
        except (OSError, ValueError):
            phases = {}
        found[name.removeprefix("test_case[").removesuffix("]")] = CaseResult(
            row.verdict, row.seconds, messages.get(row.case, ""), phases
        )
    return found


@functools.cache
def runner_tests(module: Path = PROJECT_ROOT / TEST_MODULE) -> list[str]:
    """The runner's own tests beside test_case (a wrong expectation fails, a leftover fails): every cell
    runs them, so a shard is dealt them like cases."""
    tree = ast.parse(module.read_text(), str(module))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name != "test_case"
    ]


def units(cases: list[str]) -> list[str]:
    """What one cell runs, one name per test: the cases (all of scenarios/cases/ when none are named) and
    the runner's own tests."""
    return (cases or [d.name for d in case_dirs(CASES_DIR)]) + runner_tests()


def node_id(unit: str) -> str:
    test = unit if unit in runner_tests() else f"test_case[{unit}]"
    return f"{TEST_MODULE}::{test}"


def deal(
    cells: list[CatalogueCell], cases: list[str], shard: Shard, plan_file: str | None, history: str | None
) -> tuple[dict[str, list[str]], Record]:
    """This shard's part: cell -> the units it runs there (cells it was dealt nothing of are left out),
    and its record. The plan is the whole run's (--shard-plan) or made here from earlier runs' durations."""
    groups: dict[str, list[str]] = {catalogue_group(c.name, u): [] for c in cells for u in units(cases)}
    chosen = choose(groups, shard, plan_file, history)
    mine = {g for g in groups if chosen.assignment[g] == shard.index}
    part = {c.name: [u for u in units(cases) if catalogue_group(c.name, u) in mine] for c in cells}
    return {name: us for name, us in part.items() if us}, Record(
        results.CATALOGUE, shard, chosen, {g: [] for g in sorted(mine)}
    )


def pytest_argv(cell: CatalogueCell, cases: list[str], folder: Path, only: list[str] | None) -> list[str]:
    """The cell's pytest command (its topology written into `folder`); `only` (a shard's part): the units
    it runs, the cell's others deselected."""
    junit = folder / "junit.xml"
    argv = [
        sys.executable, "-m", "pytest", TEST_MODULE, "-v", "-rA",
        "--platform", "linux", "--cell", cell.name, "--artifacts", str(folder / "evidence"),
        f"--junitxml={junit}", "-o", f"junit_suite_name=catalogue-{cell.name}", "-o", "junit_logging=no",
    ]  # fmt: skip
    if cell.sides is not None:
        topology = folder / "topology.yaml"
        topology.write_text(cell_topology(cell.sides).replace("# interop cell", "# catalogue cell", 1))
        argv += ["--topology", str(topology)]
    if cell.source:
        argv += ["--iked-source", os.environ[SOURCE_VARIABLE]]
    if cell.lab_name:
        argv += ["--lab-name", cell.lab_name]
    if cases:
        argv += ["--cases", ",".join(cases)]
    if only is not None:
        argv += [f"--deselect={node_id(u)}" for u in units(cases) if u not in only]
    return argv


def run_cell(
    cell: CatalogueCell,
    cases: list[str],
    out: Path,
    pytest_args: list[str],
    only: list[str] | None = None,
) -> CellOutcome:
    """One cell's cases on its lab (a shard's part of them: `only`)."""
    folder = out / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    why = why_not_run(cell)
    if why:
        (folder / "NOT-RUN").write_text(why + "\n")
        return CellOutcome(cell.name, {}, 0.0, note=f"not run: {why}")
    junit = folder / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = pytest_argv(cell, cases, folder, only)
    start = time.monotonic()
    with open(folder / "pytest.log", "w") as log:
        try:
            subprocess.run(
                argv + pytest_args,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=CELL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return CellOutcome(
                cell.name, {}, time.monotonic() - start, note=f"timed out after {CELL_TIMEOUT}s"
            )
    wall = time.monotonic() - start
    found = read_results(junit, cell.name) if junit.exists() else {}
    note = "" if found else f"no report: see {folder / 'pytest.log'}"
    return CellOutcome(cell.name, found, wall, note)


def table(outcomes: list[CellOutcome]) -> str:
    """Case x cell: verdict and seconds; the cells that did not run are listed under it."""
    ran = [o for o in outcomes if o.results]
    cases = sorted({c for o in ran for c in o.results})
    width = max([len(c) for c in cases] + [10])
    cols = [max(len(o.cell), 12) for o in ran]

    def row(label: str, values: list[str]) -> str:
        return label.ljust(width) + "  " + "  ".join(v.ljust(w) for v, w in zip(values, cols, strict=True))

    lines = [row("", [o.cell for o in ran])]
    for case in cases:
        values = []
        for o in ran:
            r = o.results.get(case)
            values.append(f"{r.verdict} {r.seconds:.0f}s" if r else "-")
        lines.append(row(case, values))
    lines.append(row("wall time", [f"{o.wall:.0f}s" for o in ran]))
    lines += [f"{o.cell}: {o.note}" for o in outcomes if o.note]
    return "\n".join(lines)


def summary(outcomes: list[CellOutcome], wall: float) -> dict[str, Any]:
    return {
        "wall_seconds": round(wall, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load": [round(x, 1) for x in os.getloadavg()],
        "cells": {
            o.cell: {
                "wall_seconds": round(o.wall, 1),
                "note": o.note,
                "results": {
                    name: {
                        "verdict": r.verdict,
                        "seconds": round(r.seconds, 1),
                        "message": r.message,
                        "phases": r.phases,
                    }
                    for name, r in o.results.items()
                },
            }
            for o in outcomes
        },
    }


def main(argv: list[str] | None = None) -> int:
    private.restrict_umask()
    parser = argparse.ArgumentParser(
        prog="python -m lab.catalogue.cells", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts/catalogue"), help="where cells' reports go"
    )
    parser.add_argument("--cells", default="", help="cells to run, by name (default: all of cells.yaml)")
    parser.add_argument("--cases", default="", help="cases to run, by name (default: all)")
    add_options(parser.add_argument, "a case on a cell")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args(argv)
    cells = load_cells()
    wanted = [c for c in args.cells.replace(",", " ").split() if c]
    cases = [c for c in args.cases.replace(",", " ").split() if c]
    if cases and not wanted:
        wanted = [cells[0].name]  # `make catalogue CASES=…` runs them on the default cell
    if unknown := [w for w in wanted if w not in {c.name for c in cells}]:
        print(f"catalogue: unknown cell {', '.join(unknown)} (cells: {', '.join(c.name for c in cells)})")
        return 2
    chosen = [c for c in cells if not wanted or c.name in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    part: dict[str, list[str]] | None = None
    record = None
    if args.shard:
        try:
            shard = Shard.parse(args.shard)
            part, record = deal(chosen, cases, shard, args.shard_plan, args.shard_durations)
        except IkedlabError as e:
            print("\n".join(e.lines("catalogue")), file=sys.stderr)
            return 2
        record.write(args.out / RECORD_NAME)
        chosen = [c for c in chosen if c.name in part]
        dealt = sum(len(us) for us in part.values())
        print(f"shard {shard}: {dealt} case(s) on {', '.join(part) or 'no cell'}", flush=True)
    start = time.monotonic()
    outcomes = []
    for cell in chosen:
        print(f"== cell {cell.name}", flush=True)
        only = part[cell.name] if part is not None else None
        outcomes.append(run_cell(cell, cases, args.out, args.pytest_args, only))
        print(table(outcomes[-1:]), flush=True)
    wall = time.monotonic() - start
    text = table(outcomes)
    print(f"\n{text}\ncatalogue wall time {wall:.0f}s; reports in {args.out}/<cell>/junit.xml")
    (args.out / "matrix.txt").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary(outcomes, wall), indent=1))
    failed = any(r.verdict in results.FAILED for o in outcomes for r in o.results.values())
    broken = any(o.note and not o.note.startswith("not run") for o in outcomes)
    status = 1 if failed or broken else 0
    if record is not None:
        record.finished, record.exit = results.now(), status
        record.write(args.out / RECORD_NAME)
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
