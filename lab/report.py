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
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from lab import graph
from lab.errors import IkedlabError
from lab.topology import Topology

SUITES = (
    ("junit-scenarios.xml", "Scenarios", "scenarios"),
    ("junit-faults.xml", "Faults", None),
    ("junit-fast.xml", "Fast tests", None),
)
LAB_INFO = "lab.json"
MESSAGE_CHARS = 600


@dataclass
class Case:
    name: str
    outcome: str  # passed, failed, error, skipped, xfailed
    seconds: float
    message: str = ""
    evidence: list[tuple[str, str]] = field(default_factory=list)  # (label, href relative to the report)


@dataclass
class Suite:
    title: str
    file: str
    cases: list[Case]


def read_junit(path: Path) -> list[Case]:
    cases = []
    for element in ET.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        for child in element:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                message = child.get("message") or (child.text or "")
            elif child.tag == "skipped":
                xfail = (child.get("type") or "") == "pytest.xfail"
                outcome = "xfailed" if xfail else "skipped"
                message = child.get("message") or ""
        name = element.get("name", "?")
        classname = element.get("classname", "")
        shown = f"{classname.rsplit('.', 1)[-1]}::{name}" if classname else name
        cases.append(Case(shown, outcome, float(element.get("time") or 0), message.strip()[:MESSAGE_CHARS]))
        cases[-1].evidence = []
        cases[-1].__dict__["node"] = name
    return cases


def evidence_links(case: Case, folder: Path, base: Path) -> list[tuple[str, str]]:
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


def _versions(info: dict[str, Any]) -> list[tuple[str, str]]:
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
    """Read the run's JUnit files and evidence under `artifacts`; write artifacts/report.html."""
    suites = []
    for filename, title, evidence_dir in SUITES:
        path = artifacts / filename
        if not path.exists():
            continue
        cases = read_junit(path)
        if evidence_dir:
            for case in cases:
                node = case.__dict__.get("node", case.name)
                case.evidence = evidence_links(
                    case, artifacts / evidence_dir / node.replace("/", "_"), artifacts
                )
        suites.append(Suite(title, filename, cases))
    info = _read_json(artifacts / "scenarios" / LAB_INFO)
    topology = _topology(info)
    every = [c for s in suites for c in s.cases]
    totals = {
        "passed": sum(c.outcome == "passed" for c in every),
        "failed": sum(c.outcome in ("failed", "error") for c in every),
        "skipped": sum(c.outcome in ("skipped", "xfailed") for c in every),
        "seconds": sum(c.seconds for c in every),
    }
    verdict = "failed" if totals["failed"] else ("passed" if every else "skipped")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lab", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
    )
    page = env.get_template("report.html.j2").render(
        verdict=verdict,
        totals=totals,
        suites=suites,
        picture=picture(topology),
        versions=_versions(info),
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    out = artifacts / "report.html"
    out.write_text(page)
    return out


def _topology(info: dict[str, Any]) -> Topology | None:
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
    args = argv if argv is not None else sys.argv[1:]
    artifacts = Path(args[0] if args else "artifacts")
    print(write_report(artifacts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
