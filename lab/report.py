"""An HTML report of a test run that a person reads at a glance: the verdict of every test with its time,
the lab's picture, the versions it ran on, and links to each scenario's evidence folder.

It is made from what `make test` leaves in the artifacts directory: the JUnit files, the per-scenario
evidence folders and `scenarios/lab.json` (versions, written by the scenario session). The picture is the
topology as `lab.graph` draws it (`ikedlab graph`). `python -m lab.report ARTIFACTS` writes
ARTIFACTS/report.html.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from lab import graph, private, results
from lab.errors import IkedlabError
from lab.redact import scrub
from lab.results import JunitCase
from lab.shard import RECORD_SUFFIX, Record
from lab.topology import Topology
from lab.versions import ikedlab_version

LAB_INFO = "lab.json"
REPORT = "report.html"


@dataclass
class Case:
    name: str
    outcome: str  # passed, failed, error, skipped, xfailed
    seconds: float
    message: str = ""
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (label, href relative to the report)
    shard: str = ""  # the shard that ran it, in a merged report


@dataclass
class Suite:
    title: str
    file: str
    cases: list[Case]


def shown_name(case: JunitCase) -> str:
    """module::test, as a person scans the table (the node id without its folder)."""
    module, _, rest = case.case.partition("::")
    return f"{Path(module).stem}::{rest}" if rest else case.name


def evidence_links(folder: Path, base: Path) -> list[tuple[str, str]]:
    """Links to the interesting files of a scenario's evidence folder, relative to the report."""
    if not folder.is_dir():
        return []
    # The transcript of every console, each gateway's iked log, the captures: the rest is in the folder.
    wanted = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix == ".pcap" or p.name.endswith("iked.log") or p.name == "all.log")
    )
    links = [("folder", folder.relative_to(base).as_posix() + "/")]
    links += [(p.relative_to(folder).as_posix(), p.relative_to(base).as_posix()) for p in wanted]
    return links


def collect(artifacts: Path, base: Path, shard: str = "") -> list[Suite]:
    """The suites of one run's artifacts folder, evidence linked relative to `base` (the report's folder)."""
    suites = []
    for found in results.suite_files(artifacts):
        cases = []
        for junit_case in results.read_junit(found.junit):
            case = Case(
                shown_name(junit_case),
                junit_case.verdict,
                junit_case.seconds,
                scrub(junit_case.message),
                shard=shard,
            )
            if found.evidence is not None:
                case.evidence = evidence_links(found.evidence / junit_case.name.replace("/", "_"), base)
            cases.append(case)
        suites.append(Suite(found.title, found.junit.relative_to(artifacts).as_posix(), cases))
    return suites


CATALOGUE = "catalogue"  # `make catalogue` writes ARTIFACTS/catalogue/summary.json and a folder per cell


@dataclass
class MatrixCell:
    verdict: str  # the report's outcome words: passed, failed, error, skipped, xfailed
    seconds: float
    message: str
    evidence: str  # href of the case's evidence folder, "" when there is none


@dataclass
class Matrix:
    cells: list[str]  # columns, in the order they ran
    rows: list[tuple[str, list[MatrixCell | None]]]  # each case: its result per cell (None: not in that cell)
    notes: list[str]  # cells that did not run, and why
    wall: float


def catalogue_matrix(folders: Sequence[Path], base: Path) -> Matrix | None:
    """The catalogue's case x cell matrix from `make catalogue`'s summary.json in each artifacts folder
    (one, or a merge's shards: each ran part of the cases, the wall is the longest shard's), evidence linked
    relative to `base`; None when the catalogue never ran."""
    ran: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {}  # cell -> case -> (result, its folder)
    notes: list[str] = []
    walls = [0.0]
    for artifacts in folders:
        summary = _read_json(artifacts / CATALOGUE / "summary.json")
        walls.append(float(summary.get("wall_seconds", 0)))
        for name, info in (summary.get("cells") or {}).items():
            if info.get("results"):
                cell = ran.setdefault(name, {})
                cell.update({case: (r, artifacts) for case, r in info["results"].items()})
            if info.get("note") and f"{name}: {info['note']}" not in notes:
                notes.append(f"{name}: {info['note']}")
    if not ran and not notes:
        return None
    rows = []
    for case in sorted({case for cell in ran.values() for case in cell}):
        entries: list[MatrixCell | None] = []
        for name, cell in ran.items():
            if case not in cell:
                entries.append(None)
                continue
            result, artifacts = cell[case]
            folder = artifacts / CATALOGUE / name / "evidence" / f"test_case[{case}]"
            href = folder.relative_to(base).as_posix() + "/" if folder.is_dir() else ""
            verdict = result["verdict"] if result["verdict"] in results.VERDICTS else "error"
            entries.append(MatrixCell(verdict, float(result["seconds"]), result.get("message", ""), href))
        rows.append((case, entries))
    return Matrix(list(ran), rows, notes, max(walls))


@dataclass(frozen=True)
class Picture:
    """The lab's picture for the report: an SVG (base64, shown as an <img>: a browser runs no script and
    follows no link inside an image, whatever a topology's names smuggled into it), else its text drawing."""

    svg_base64: str = ""
    text: str = "(no topology recorded)"


def picture(topology: Topology | None) -> Picture:
    """The lab as lab.graph draws it: SVG through graphviz, its text drawing where graphviz is missing."""
    if topology is None:
        return Picture()
    try:
        svg = graph.topology_svg(topology)
    except IkedlabError:
        return Picture(text=graph.text(graph.LabView(topology)))
    return Picture(svg_base64=base64.b64encode(svg.encode()).decode())


def version_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if info.get("platform"):
        rows.append(("platform", str(info["platform"])))
    ikedlab = info.get("ikedlab") or {}
    if ikedlab:
        rows.append(("ikedlab", f"{ikedlab.get('version')} (commit {ikedlab.get('commit')})"))
    for platform, parts in sorted((info.get("images") or {}).items()):
        for part, digest in sorted(parts.items()):
            rows.append((f"{platform} image {part}", str(digest)))
    for host, values in sorted((info.get("guests") or {}).items()):
        rows.append((host, "; ".join(f"{k} {v}" for k, v in sorted(values.items()))))
    return rows or [("versions", "not recorded (no scenario session ran)")]


def write_report(artifacts: Path) -> Path:
    """Read the run's JUnit files and evidence under `artifacts`; write artifacts/report.html and the run's
    results file (artifacts/results.json, lab/results.py)."""
    info = read_lab_info(artifacts)
    records = shard_records(artifacts)
    shard = str(records[0].shard) if records else ""
    run = results.Run(
        ikedlab_version()["commit"],
        results.now(),
        results.rows_from_artifacts(artifacts, shard),
        shards=records[0].shard.count if records else 1,
    )
    results.write(artifacts / results.RESULTS_FILE, run)
    return render(
        artifacts / REPORT,
        collect(artifacts, artifacts, shard),
        version_rows(info),
        lab_topology(info),
        matrix=catalogue_matrix([artifacts], artifacts),
    )


def read_lab_info(artifacts: Path) -> dict[str, Any]:
    """What the scenario session recorded of its lab (versions, topology): scenarios/lab.json."""
    return _read_json(artifacts / "scenarios" / LAB_INFO)


def shard_records(artifacts: Path) -> list[Record]:
    """The shard records a sharded run left in its artifacts folder (one per suite), none for a whole run."""
    return [Record.load(p) for p in sorted(artifacts.rglob(f"*{RECORD_SUFFIX}"))]


def totals(suites: list[Suite]) -> dict[str, float]:
    every = [c for s in suites for c in s.cases]
    return {
        "passed": sum(c.outcome == "passed" for c in every),
        "failed": sum(c.outcome in results.FAILED for c in every),
        "skipped": sum(c.outcome in ("skipped", "xfailed") for c in every),
        "seconds": sum(c.seconds for c in every),
    }


def render(
    out: Path,
    suites: list[Suite],
    versions: list[tuple[str, str]],
    topology: Topology | None,
    shards: list[Any] | None = None,
    problems: list[str] | None = None,
    matrix: Matrix | None = None,
) -> Path:
    """The report page: verdicts per suite, the lab's picture, versions; in a merged report also which shard
    ran what, and what did not run (`problems` make the verdict failed); the catalogue's case x cell
    `matrix` when `make catalogue` ran."""
    counts = totals(suites)
    ran = any(s.cases for s in suites)
    verdict = "failed" if counts["failed"] or problems else ("passed" if ran else "skipped")
    page = (
        environment()
        .get_template("report.html.j2")
        .render(
            verdict=verdict,
            totals=counts,
            suites=suites,
            picture=picture(topology),
            versions=versions,
            shards=shards or [],
            problems=problems or [],
            generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            matrix=matrix,
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("lab", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )


def lab_topology(info: dict[str, Any]) -> Topology | None:
    """The lab the run used, from the text recorded at its `up` (the file may have changed since)."""
    from lab.placement import parse_topology

    try:
        return parse_topology(info["topology_text"], Path(info.get("topology") or "topology.yaml"))
    except Exception:  # noqa: BLE001 - a report without a picture is still a report
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    private.restrict_umask()
    args = argv if argv is not None else sys.argv[1:]
    artifacts = Path(args[0] if args else "artifacts")
    print(write_report(artifacts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
