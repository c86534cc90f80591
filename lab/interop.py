"""`make interop`: the guide's scenarios 1-5 over a matrix of (initiator x responder) cells.

A cell is one lab: the guide's topology with init and resp set to two sides (a platform and, where it can be
chosen, an iked version) from lab/interop.yaml. Each cell runs the scenario suite in its own pytest process,
one cell at a time (one lab on the machine), and leaves under artifacts/interop/<cell>/ its topology, its
JUnit report, the pytest output and, for failing scenarios, their evidence folders. A known interop failure
(`known:` in lab/interop.yaml) is a strict xfail with its reason and upstream reference, never a skip: when
it starts passing the cell goes red until the list is updated. Cells whose platform has no image here (an
OpenBSD cell without a cached OpenBSD image) are shown as such, not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import PROJECT_ROOT, private, redact
from lab.errors import IkedlabError
from lab.ownership import checkout_tag
from lab.platforms import get_platform
from lab.results import INTEROP, now, read_junit
from lab.shard import RECORD_SUFFIX, Record, Shard, add_options, choose
from lab.topology import guide_path

MATRIX = Path(__file__).with_name("interop.yaml")
SCENARIOS = ("test_1_tunnel.py", "test_2_ping.py", "test_3_enc0.py", "test_4_counters.py", "test_5_wire.py")
#: One cell's whole run (boot, provision, five scenarios) may take this long before it is reported stuck.
CELL_TIMEOUT = 1500
RECORD_NAME = f"interop{RECORD_SUFFIX}"  # beside the cells' folders: what this shard of the matrix was dealt


@dataclass(frozen=True)
class Side:
    name: str
    platform: str
    iked: str | None = None


@dataclass(frozen=True)
class Cell:
    init: Side
    resp: Side

    @property
    def name(self) -> str:
        return f"{self.init.name}--{self.resp.name}"


@dataclass(frozen=True)
class Matrix:
    cells: tuple[Cell, ...]
    known: tuple[dict[str, str], ...]


def load_matrix(path: Path = MATRIX) -> Matrix:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise IkedlabError(f"{path}: unreadable ({e})") from None
    sides: dict[str, Side] = {}
    for name, raw in (data.get("sides") or {}).items():
        if not isinstance(raw, dict) or "platform" not in raw:
            raise IkedlabError(f"{path}: sides.{name}: expected {{platform: NAME, iked: VERSION}}")
        sides[str(name)] = Side(str(name), str(raw["platform"]), raw.get("iked"))
    cells = []
    for i, pair in enumerate(data.get("cells") or []):
        if not isinstance(pair, list) or len(pair) != 2 or not all(p in sides for p in pair):
            raise IkedlabError(f"{path}: cells[{i}]: expected [INIT, RESP] from sides ({', '.join(sides)})")
        cells.append(Cell(sides[pair[0]], sides[pair[1]]))
    known = []
    for i, entry in enumerate(data.get("known") or []):
        if not isinstance(entry, dict) or not {"cell", "test", "reason", "reference"} <= set(entry):
            raise IkedlabError(f"{path}: known[{i}]: expected cell, test, reason and reference")
        if entry["test"] == "*" and "lab_error" not in entry:  # the whole cell: only for the error it names
            raise IkedlabError(f"{path}: known[{i}]: a whole-cell entry (test '*') needs lab_error, a regex")
        known.append({k: str(v) for k, v in entry.items()})
    return Matrix(tuple(cells), tuple(known))


def cell_topology(cell: Cell) -> str:
    """The guide's topology with init and resp on the cell's two sides."""
    data = yaml.safe_load(guide_path().read_text())
    for host, side in (("init", cell.init), ("resp", cell.resp)):
        data["hosts"][host]["platform"] = side.platform
        if side.iked:
            data["hosts"][host]["iked"] = side.iked
    # The LAN hosts and the router keep the lab's default platform (the Linux appliance).
    header = f"# interop cell {cell.name}: init {cell.init.name}, resp {cell.resp.name} (lab/interop.py)\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def unavailable(cell: Cell) -> str | None:
    """Why this cell cannot run on this machine (no image of one side's platform), or None."""
    for side in (cell.init, cell.resp):
        if not get_platform(side.platform).media_available():
            return f"no {side.platform} image here"
    return None


@dataclass
class Outcome:
    cell: str
    results: dict[str, str]  # scenario test name -> pass / fail / xfail / skip / error
    wall: float
    note: str = ""


#: The table's short words for lab.results' verdicts.
SHORT = {"passed": "pass", "failed": "fail", "error": "error", "skipped": "skip", "xfailed": "xfail"}


def junit_results(path: Path) -> dict[str, str]:
    """A JUnit report -> test name -> pass, fail, error, skip or xfail."""
    return {case.name: SHORT[case.verdict] for case in read_junit(path)}


def run_cell(cell: Cell, known: tuple[dict[str, str], ...], out: Path, pytest_args: list[str]) -> Outcome:
    folder = out / cell.name
    folder.mkdir(parents=True, exist_ok=True)
    why = unavailable(cell)
    if why:
        (folder / "NOT-RUN").write_text(why + "\n")
        return Outcome(cell.name, {}, 0.0, note=f"not run: {why}")
    topology = folder / "topology.yaml"
    topology.write_text(cell_topology(cell))
    known_here = [k for k in known if k["cell"] == cell.name]
    (folder / "known.json").write_text(json.dumps(known_here, indent=1))
    junit = folder / "junit.xml"
    argv = [
        sys.executable, "-m", "pytest", *(f"scenarios/{s}" for s in SCENARIOS), "-v",
        "--platform", "linux", "--topology", str(topology), "--artifacts", str(folder / "evidence"),
        "--known-failures", str(folder / "known.json"), f"--junitxml={junit}",
        "-o", f"junit_suite_name=interop-{cell.name}", *pytest_args,
    ]  # fmt: skip
    start = time.monotonic()
    with open(folder / "pytest.log", "w") as log:
        try:
            subprocess.run(argv, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=CELL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return Outcome(cell.name, {}, time.monotonic() - start, note=f"timed out after {CELL_TIMEOUT}s")
    wall = time.monotonic() - start
    log_file = folder / "pytest.log"  # published with the cell: a guest's output quoted there loses its keys
    log_file.write_bytes(redact.scrub_bytes(log_file.read_bytes()))
    results = junit_results(junit) if junit.exists() else {}
    _keep_failing_evidence(folder / "evidence", results)
    if not results or "error" in results.values():  # the lab itself failed: its consoles say why
        _keep_lab_transcripts(folder / "lab")
    return Outcome(
        cell.name, results, wall, note="" if results else f"no report: see {folder / 'pytest.log'}"
    )


def _keep_failing_evidence(evidence: Path, results: dict[str, str]) -> None:
    """Evidence folders of passing scenarios are dropped: what stays is what someone must read."""
    if not evidence.is_dir():
        return
    for folder in evidence.iterdir():
        if results.get(folder.name) == "pass":
            shutil.rmtree(folder, ignore_errors=True)


def _keep_lab_transcripts(dest: Path) -> None:
    """The scenario lab's consoles and serial logs (the next cell's lab reuses its run directory)."""
    run_dir = private.labs_dir() / f"scn-{checkout_tag()}"
    for sub in ("console", "serial"):
        if (run_dir / sub).is_dir():
            redact.copy_tree(run_dir / sub, dest / sub)


def table(outcomes: list[Outcome]) -> str:
    """Scenario x cell, one column per cell that ran; cells that did not run are listed under it."""
    ran = [o for o in outcomes if not o.note.startswith("not run")]
    tests = sorted({t for o in ran for t in o.results}, key=lambda t: (t.split("_")[0], t))
    width = max([min(len(t), 60) for t in tests] + [9])
    cols = [max(len(o.cell), 5) for o in ran]

    def row(label: str, values: list[str]) -> str:
        return (
            label[:width].ljust(width)
            + "  "
            + "  ".join(v.ljust(c) for v, c in zip(values, cols, strict=True))
        )

    lines = [row("", [o.cell for o in ran])]
    lines += [row(t, [o.results.get(t, "-" if o.results else "") for o in ran]) for t in tests]
    lines.append(row("wall time", [f"{o.wall:.0f}s" for o in ran]))
    lines += [f"{o.cell}: {o.note}" for o in outcomes if o.note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    private.restrict_umask()
    parser = argparse.ArgumentParser(prog="python -m lab.interop", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/interop"), help="where cells' reports go")
    parser.add_argument("--cells", default="", help="only these cells (comma-separated INIT--RESP names)")
    add_options(parser.add_argument, "whole cells")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args(argv)
    matrix = load_matrix()
    wanted = {c for c in args.cells.split(",") if c}
    cells = [c for c in matrix.cells if not wanted or c.name in wanted]
    if unknown := wanted - {c.name for c in matrix.cells}:
        raise SystemExit(f"--cells: unknown cell {', '.join(sorted(unknown))} (see {MATRIX})")
    args.out.mkdir(parents=True, exist_ok=True)
    record = None
    if args.shard:  # whole cells (one lab each) to each shard, by the same plan as pytest's modules
        try:
            shard = Shard.parse(args.shard)
            groups: dict[str, list[str]] = {cell_group(c): [] for c in cells}
            chosen = choose(groups, shard, args.shard_plan, args.shard_durations)
        except IkedlabError as e:
            raise SystemExit("\n".join(e.lines("lab.interop"))) from None
        cells = [c for c in cells if chosen.assignment[cell_group(c)] == shard.index]
        record = Record("interop", shard, chosen, {cell_group(c): [] for c in cells})
        record.write(args.out / RECORD_NAME)
        print(f"shard {shard}: cells {', '.join(c.name for c in cells) or '(none)'}", flush=True)
    start = time.monotonic()
    outcomes = []
    for cell in cells:
        print(f"== cell {cell.name}", flush=True)
        outcomes.append(run_cell(cell, matrix.known, args.out, args.pytest_args))
        print(table(outcomes[-1:]), flush=True)
    wall = time.monotonic() - start
    report = table(outcomes)
    print(f"\n{report}\nmatrix wall time {wall:.0f}s; reports in {args.out}/<cell>/junit.xml")
    (args.out / "matrix.txt").write_text(report + "\n")
    summary = {
        "wall_seconds": round(wall, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": {
            o.cell: {"results": o.results, "wall_seconds": round(o.wall, 1), "note": o.note} for o in outcomes
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    failed = any(r in ("fail", "error") for o in outcomes for r in o.results.values())
    broken = any(o.note and not o.note.startswith("not run") for o in outcomes)
    status = 1 if failed or broken else 0
    if record is not None:
        record.finished, record.exit = now(), status
        record.write(args.out / RECORD_NAME)
    return status


def cell_group(cell: Cell) -> str:
    """A cell as a shard's unit (lab/results.py names interop rows' groups the same way)."""
    return f"{INTEROP}/{cell.name}"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
