"""What a run leaves for the runs after it: one small results file, a row per case (suite, cell, case,
verdict, seconds) under the run's commit.

Rows are read from the JUnit files a run writes into its artifacts folder (the only reader of them: the
HTML report, the interop table, the shard planner's durations and the trend all start here). The layout of
an artifacts folder is known here once: `junit-fast.xml`, `junit-scenarios.xml`, `junit-faults.xml`, and one
`interop/<cell>/junit.xml` per interop cell (and `catalogue/<cell>/junit.xml` per catalogue cell), with each
scenario's evidence in a folder named after the test.
A case is named by its pytest node id (`scenarios/test_2_ping.py::test_initlan_reaches_resplan`), rebuilt from
JUnit's classname and name; its group (what a shard takes whole, lab/shard.py) is its module, or the cell
for a suite whose unit is one lab per cell.
"""

from __future__ import annotations

import json
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lab.errors import IkedlabError

FORMAT = "ikedlab-results/1"
RESULTS_FILE = "results.json"
VERDICTS = ("passed", "failed", "error", "skipped", "xfailed")
FAILED = frozenset({"failed", "error"})
MESSAGE_CHARS = 600
LAB_UP_PROPERTY = "lab_up_seconds"  # a JUnit property: what the session's lab took to come up


class ResultsError(IkedlabError):
    """A results file or JUnit file that cannot be read."""


@dataclass(frozen=True)
class SuiteFile:
    """One JUnit file of an artifacts folder and what it stands for."""

    suite: str  # scenarios, faults, fast, interop
    title: str
    junit: Path
    cell: str  # the interop cell; for the scenario suite, the platform its JUnit records; else ""
    evidence: Path | None  # the folder holding one evidence folder per test, if the suite keeps any


#: (suite, title, JUnit file, evidence folder), in the order the report shows them.
SUITES = (
    ("scenarios", "Scenarios", "junit-scenarios.xml", "scenarios"),
    ("openbsd-current", "Scenarios on OpenBSD -current", "junit-openbsd-current.xml", "openbsd-current"),
    ("faults", "Faults", "junit-faults.xml", None),
    ("nightly", "Nightly checks", "junit-nightly.xml", None),
    ("fast", "Fast tests", "junit-fast.xml", None),
)
FOLDER_SUITES = {"tests": "fast"}  # the fast tests' folder is tests/, their suite "fast" (junit-fast.xml)
INTEROP = "interop"
CATALOGUE = "catalogue"  # `make catalogue`: catalogue/<cell>/junit.xml, each case's evidence in evidence/
#: Suites whose unit is a lab per cell: an interop shard takes a whole cell, and a case's group is its cell;
#: the catalogue's group is one case on one cell (catalogue_group), so one cell's cases can be split too.
CELL_SUITES = (INTEROP, CATALOGUE)


def suite_files(artifacts: Path) -> list[SuiteFile]:
    found = []
    for suite, title, name, evidence in SUITES:
        path = artifacts / name
        if path.is_file():
            cell = _properties(path).get("platform", "")
            found.append(SuiteFile(suite, title, path, cell, artifacts / evidence if evidence else None))
    for suite, title in ((INTEROP, "Interop"), (CATALOGUE, "Catalogue")):
        for path in sorted((artifacts / suite).glob("*/junit.xml")):
            cell = path.parent.name
            found.append(SuiteFile(suite, f"{title} {cell}", path, cell, path.parent / "evidence"))
    return found


@dataclass(frozen=True)
class JunitCase:
    """One <testcase> of a JUnit file."""

    case: str  # the pytest node id
    name: str  # the test's own name, parameters included: scenarios name their evidence folders after it
    verdict: str
    seconds: float
    message: str = ""


def node_id(classname: str, name: str) -> str:
    """pytest's node id back from JUnit's classname (the module's dotted path, then any class) and name."""
    if not classname:
        return name
    parts = classname.split(".")
    module = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
    path = "/".join(parts[: module + 1]) + ".py"
    return "::".join([path, *parts[module + 1 :], name])


def suite_of_group(group: str) -> str:
    """The suite a group (a module's path, or suite/cell) belongs to."""
    folder = group.split("/", 1)[0]
    return FOLDER_SUITES.get(folder, folder)


def group_of(case: str) -> str:
    """A pytest case's group: its module (a shard takes a module whole)."""
    return case.split("::", 1)[0]


def read_junit(path: Path) -> list[JunitCase]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ResultsError(f"{path}: not a readable JUnit file ({e})") from None
    cases = []
    for element in root.iter("testcase"):
        verdict, message = "passed", ""
        for child in element:
            if child.tag in ("failure", "error"):
                verdict = "failed" if child.tag == "failure" else "error"
                message = child.get("message") or (child.text or "")
            elif child.tag == "skipped":
                verdict = "xfailed" if (child.get("type") or "") == "pytest.xfail" else "skipped"
                message = child.get("message") or ""
        name = element.get("name", "?")
        cases.append(
            JunitCase(
                node_id(element.get("classname", ""), name),
                name,
                verdict,
                float(element.get("time") or 0),
                message.strip()[:MESSAGE_CHARS],
            )
        )
    return cases


def _properties(path: Path) -> dict[str, str]:
    """The <property> elements of a JUnit file's suites (record_testsuite_property)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    return {p.get("name", ""): p.get("value", "") for p in root.iter("property")}


@dataclass(frozen=True)
class Row:
    """One case of one run."""

    suite: str
    cell: str
    group: str
    case: str
    verdict: str
    seconds: float
    shard: str = ""  # "2/3" when the run was sharded

    @property
    def key(self) -> tuple[str, str, str]:
        """What names a case across runs: the same test on another cell is another case."""
        return (self.suite, self.cell, self.case)


def rows_of(suite: SuiteFile, shard: str = "") -> list[Row]:
    """A suite's cases as rows, each with its own time: pytest charges a session's lab bring-up (recorded
    by the scenario session as a property) to the first case, and it is taken off that case here."""
    cases = read_junit(suite.junit)
    lab_up = _float(_properties(suite.junit).get(LAB_UP_PROPERTY))
    if cases and lab_up:
        cases[0] = replace(cases[0], seconds=max(cases[0].seconds - lab_up, 0.0))
    return [
        Row(suite.suite, suite.cell, _group(suite, c), c.case, c.verdict, round(c.seconds, 2), shard)
        for c in cases
    ]


def _group(suite: SuiteFile, case: JunitCase) -> str:
    if suite.suite == CATALOGUE:
        return catalogue_group(suite.cell, case.name)
    return f"{suite.suite}/{suite.cell}" if suite.suite in CELL_SUITES else group_of(case.case)


def catalogue_group(cell: str, test: str) -> str:
    """A catalogue row's group, what a shard takes: one case (test_case[NAME]) or one of the runner's own
    tests, on one cell. A cell's lab is brought up by every shard dealt any of its cases."""
    if test.startswith("test_case[") and test.endswith("]"):
        test = test.removeprefix("test_case[").removesuffix("]")
    return f"{CATALOGUE}/{cell}/{test}"


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def rows_from_artifacts(artifacts: Path, shard: str = "") -> list[Row]:
    return [row for suite in suite_files(artifacts) for row in rows_of(suite, shard)]


@dataclass
class Run:
    """One run's results file: its commit, when it finished, and a row per case."""

    commit: str
    finished: str  # ISO 8601, UTC
    rows: list[Row] = field(default_factory=list)
    label: str = ""  # what a person calls the run (CI run number, a date)
    shards: int = 1
    source: str = ""  # the file it was read from

    @property
    def name(self) -> str:
        return self.label or f"{self.finished[:16]} {self.commit[:10]}"

    def to_json(self) -> str:
        rows = [{k: v for k, v in asdict(r).items() if v != ""} for r in self.rows]
        head = {"format": FORMAT, "commit": self.commit, "finished": self.finished, "label": self.label}
        return json.dumps({**head, "shards": self.shards, "cases": rows}, indent=0) + "\n"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write(path: Path, run: Run) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run.to_json())
    return path


def keep(path: Path, history: Path) -> Path:
    """A copy of a run's results file in a history folder, named so the folder sorts oldest first."""
    run = load(path)
    stamp = run.finished.replace(":", "").replace("-", "") or "unknown"
    commit = "".join(c for c in run.commit[:10] if c.isalnum()) or "nocommit"
    dest = history / f"{stamp}-{commit}.json"
    history.mkdir(parents=True, exist_ok=True)
    dest.write_text(path.read_text())
    return dest


def load(path: Path) -> Run:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: not a readable results file ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ResultsError(f"{path}: format: expected {FORMAT}")
    rows = []
    for i, raw in enumerate(data.get("cases") or []):
        try:
            rows.append(
                Row(
                    str(raw["suite"]),
                    str(raw.get("cell", "")),
                    str(raw["group"]),
                    str(raw["case"]),
                    _verdict(raw["verdict"]),
                    float(raw["seconds"]),
                    str(raw.get("shard", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ResultsError(f"{path}: cases[{i}]: {e}") from None
    return Run(
        str(data.get("commit", "")),
        str(data.get("finished", "")),
        rows,
        str(data.get("label", "")),
        int(data.get("shards") or 1),
        str(path),
    )


def _verdict(value: object) -> str:
    if value not in VERDICTS:
        raise ValueError(f"verdict {value!r} is not one of {', '.join(VERDICTS)}")
    return str(value)


def load_history(where: Path) -> list[Run]:
    """Every run under a folder (or in one file), oldest first. A folder's results files are its runs; a
    folder without any (runs from before results files) gives each JUnit file as a run of its own. Other
    files in a folder (lab.json, evidence) are not runs."""
    if where.is_file():
        return [_load_any(where)]
    if not where.is_dir():
        raise ResultsError(f"{where}: no such file or folder of results")
    runs = [load(p) for p in sorted(where.rglob("*.json")) if _is_results(p)]
    if not runs:
        runs = [_load_any(p) for p in sorted(where.rglob("junit*.xml"))]
    return sorted(runs, key=lambda r: (r.finished, r.source))


def _is_results(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return FORMAT.encode() in f.read(200)  # "format" is the first key this module writes
    except OSError:
        return False


def _load_any(path: Path) -> Run:
    if path.suffix != ".xml":
        return load(path)
    suite = SuiteFile(
        path.stem.removeprefix("junit-"), path.stem, path, _properties(path).get("platform", ""), None
    )
    mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    return Run("", mtime, rows_of(suite), source=str(path))


@dataclass(frozen=True)
class Durations:
    """Seconds from earlier runs, the newest run that had it counting: per case (within its group) and per
    group (cells, whose cases are not known before they run)."""

    cases: dict[tuple[str, str], float] = field(default_factory=dict)
    groups: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_runs(cls, runs: Iterable[Run]) -> Durations:
        cases: dict[tuple[str, str], float] = {}
        groups: dict[str, float] = {}
        for run in runs:  # oldest first: a newer run overwrites
            in_run: dict[str, float] = {}
            for row in run.rows:
                if row.verdict == "skipped":
                    continue  # a skip costs nothing and says nothing of the next run's time
                cases[(row.group, row.case)] = row.seconds
                in_run[row.group] = in_run.get(row.group, 0.0) + row.seconds
            groups.update(in_run)
        return cls(cases, groups)

    def median_case(self) -> float:
        """A case of unknown length weighs the median known case: 1 s when nothing is known at all."""
        return statistics.median(self.cases.values()) if self.cases else 1.0


def with_shard(rows: Iterable[Row], shard: str) -> list[Row]:
    return [replace(r, shard=shard) for r in rows]
