"""`ikedlab report --merge DIR... -o OUT`: the shards of one run (lab/shard.py), each an artifacts folder
from its own machine, joined into one HTML report, one JUnit file and one results file.

The report says which shard ran what (host, suites, groups, tests, seconds) and shows a shard that is
missing, failed, broken or never finished as such; every group a missing shard was dealt is listed as not
run, in the report and as an error in the JUnit file, so a CI view of the merged run cannot look green
while part of it never ran. A case that ran in two shards, shards that planned from different inputs or
ran different commits are problems too. Each shard's folder is copied under OUT/shards/<i-of-n>/ with
every text file through the redactor (the merged report leaves the machine), so evidence links work
wherever OUT is published.
"""

from __future__ import annotations

import calendar
import os
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import report, results
from lab.errors import IkedlabError
from lab.redact import scrub
from lab.shard import Plan, Record, Shard
from lab.topology import Topology
from lab.versions import ikedlab_version

SHARDS = "shards"  # OUT/shards/<i-of-n>/: each shard's artifacts, redacted
JUNIT = "junit.xml"
TEXT_LIMIT = 64 * 1024 * 1024  # larger files are copied as they are (no evidence text is near this)


class MergeError(IkedlabError):
    """Shard folders that cannot be merged (the output inside an input, no folder at all)."""


@dataclass
class ShardView:
    """One shard as the merged report shows it."""

    label: str  # 1/2, or the folder's name for an unsharded part
    folder: str  # the folder it came from ("" when missing)
    status: str  # passed, failed, broken, unfinished, incomplete, missing
    host: str = ""
    groups: list[str] = field(default_factory=list)
    cases: int = 0
    seconds: float = 0.0  # wall time of its suites, start to end
    note: str = ""


@dataclass
class Part:
    """One input folder, read."""

    folder: Path
    copy: Path
    records: list[Record]
    rows: list[results.Row]
    run: results.Run | None  # its own results file, when its `make report` wrote one

    @property
    def shard(self) -> Shard | None:
        return self.records[0].shard if self.records else None


@dataclass
class Merged:
    report: Path
    junit: Path
    results: Path
    shards: list[ShardView]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.status == "passed" for s in self.shards)


def merge(folders: Sequence[Path], out: Path) -> Merged:
    if not folders:
        raise MergeError("report --merge: no shard folder given", hint="ikedlab report --merge DIR... -o OUT")
    out = out.resolve()
    for folder in folders:
        if folder.is_dir() and out.is_relative_to(folder.resolve()):
            raise MergeError(f"-o {out}: inside the shard folder {folder}", hint="write the merge elsewhere")
    if (out / SHARDS).exists():
        shutil.rmtree(out / SHARDS)  # a merge again into the same folder starts clean
    problems: list[str] = []
    parts: list[Part] = []
    views: list[ShardView] = []
    for folder in folders:
        if not folder.is_dir():
            views.append(ShardView(folder.name, str(folder), "missing", note="no such folder"))
            problems.append(f"{folder}: no such folder (a shard that left no artifacts?)")
            continue
        part = _read(folder, out, problems)
        parts.append(part)
    parts.sort(key=lambda p: (p.shard is None, p.shard or Shard(1, 1), p.folder.name))
    count = _count(parts, problems)
    for part in parts:
        views.append(_view(part))
    seen = {p.shard.index for p in parts if p.shard}
    plans = _plans(parts, problems)
    for index in range(1, count + 1):
        if index not in seen:
            groups = sorted({g for plan in plans.values() for g in plan.groups(index)})
            views.append(ShardView(f"{index}/{count}", "", "missing", groups=groups, note="no folder given"))
    not_run = _not_run(parts, plans, count, problems)
    _duplicates(parts, problems)
    for view in views:
        if view.status in ("broken", "unfinished", "incomplete", "failed") and view.note:
            problems.append(f"shard {view.label}: {view.note}")
    views.sort(key=lambda v: _order(v.label))
    junit = _write_junit(out / JUNIT, parts, not_run)
    run = _run(parts, count, problems)
    results_file = results.write(out / results.RESULTS_FILE, run)
    suites = _suites(parts, out)
    versions, topology = _versions(parts)
    matrix = report.catalogue_matrix([p.copy for p in parts], out)
    page = report.render(out / report.REPORT, suites, versions, topology, views, problems, matrix)
    return Merged(page, junit, results_file, views, problems)


def _read(folder: Path, out: Path, problems: list[str]) -> Part:
    try:
        records = report.shard_records(folder)
    except IkedlabError as e:
        problems.append(str(e))
        records = []
    shards = {str(r.shard) for r in records}
    if len(shards) > 1:
        problems.append(
            f"{folder}: records of several shards ({', '.join(sorted(shards))}): one folder a shard"
        )
    name = records[0].shard.label if records else folder.name
    copy = out / SHARDS / name
    if copy.exists():  # two folders of one shard: keep both, say so
        problems.append(f"{folder}: shard {name} given twice")
        copy = out / SHARDS / f"{name}-{folder.name}"
    _copy_redacted(folder, copy)
    shard = str(records[0].shard) if records else ""
    run = None
    if (copy / results.RESULTS_FILE).is_file():
        try:
            run = results.load(copy / results.RESULTS_FILE)
        except IkedlabError as e:
            problems.append(str(e))
    return Part(folder, copy, records, results.rows_from_artifacts(copy, shard), run)


def _copy_redacted(source: Path, dest: Path) -> None:
    """The folder's files, text through the redactor; links are not followed (a shard's folder came from
    another machine)."""
    for root, dirs, files in os.walk(source):
        here = Path(root)
        target = dest / here.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
        for name in files:
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes() if path.stat().st_size <= TEXT_LIMIT else None
            if data is None or b"\0" in data[:8192]:
                shutil.copyfile(path, target / name)  # binary (a pcap) or huge: as it is
                continue
            try:
                (target / name).write_text(scrub(data.decode()))
            except UnicodeDecodeError:
                shutil.copyfile(path, target / name)


def _count(parts: list[Part], problems: list[str]) -> int:
    counts = {p.shard.count for p in parts if p.shard}
    if len(counts) > 1:
        problems.append(f"shards of different runs: counts {', '.join(map(str, sorted(counts)))}")
    return max(counts, default=0)


def _view(part: Part) -> ShardView:
    if not part.records:
        status = (
            "passed" if part.rows and not any(r.verdict in results.FAILED for r in part.rows) else "failed"
        )
        return ShardView(
            part.folder.name,
            str(part.folder),
            status if part.rows else "missing",
            cases=len(part.rows),
            seconds=sum(r.seconds for r in part.rows),
            note="" if part.rows else "no JUnit file and no shard record",
        )
    exits = [r.exit for r in part.records]
    status, note = "passed", ""
    if any(e is None for e in exits):
        unfinished = [r.suite for r in part.records if r.exit is None]
        status, note = "unfinished", f"{', '.join(unfinished)} never finished (killed or timed out)"
    elif any(e not in (0, 1) for e in exits):
        broken = [f"{r.suite} (exit {r.exit})" for r in part.records if r.exit not in (0, 1)]
        status, note = "broken", f"{', '.join(broken)} stopped before running its tests"
    elif any(e == 1 for e in exits) or any(r.verdict in results.FAILED for r in part.rows):
        status = "failed"
    return ShardView(
        str(part.shard),
        str(part.folder),
        status,
        host=", ".join(sorted({r.host for r in part.records})),
        groups=sorted({g for r in part.records for g in r.selected}),
        cases=len(part.rows),
        seconds=round(sum(_wall(r) for r in part.records), 1),
        note=note,
    )


def _wall(record: Record) -> float:
    """A suite's time on its shard, start to end (its lab's bring-up included), 0 while unfinished."""
    try:
        start, end = (time.strptime(t, "%Y-%m-%dT%H:%M:%SZ") for t in (record.started, record.finished))
    except ValueError:
        return 0.0
    return max(calendar.timegm(end) - calendar.timegm(start), 0.0)


def _plans(parts: list[Part], problems: list[str]) -> dict[str, Plan]:
    """Each suite's plan; shards of one suite that planned differently are a problem (a group may have run
    twice or not at all)."""
    plans: dict[str, Plan] = {}
    for part in parts:
        for record in part.records:
            known = plans.setdefault(record.suite, record.plan)
            if known.fingerprint != record.plan.fingerprint:
                problems.append(
                    f"{record.suite}: shard {record.shard} followed plan {record.plan.fingerprint}, another "
                    f"shard {known.fingerprint} (different durations or checkouts): groups may have run "
                    "twice or not at all"
                )
    return plans


def _not_run(
    parts: list[Part], plans: dict[str, Plan], count: int, problems: list[str]
) -> list[tuple[str, str]]:
    """(shard, group) for every group dealt to a shard that left no record of its suite."""
    recorded = {(r.suite, r.shard.index) for p in parts for r in p.records}
    missing = []
    for suite, plan in sorted(plans.items()):
        for index in range(1, count + 1):
            if (suite, index) in recorded:
                continue
            groups = [g for g in plan.groups(index) if results.suite_of_group(g) == suite]
            if groups:
                problems.append(
                    f"{suite}: shard {index}/{count} left no record: {len(groups)} group"
                    f"{'s' if len(groups) > 1 else ''} did not run ({', '.join(groups)})"
                )
                missing += [(f"{index}/{count}", g) for g in groups]
    return missing


def _duplicates(parts: list[Part], problems: list[str]) -> None:
    where: dict[tuple[str, str, str], list[str]] = {}
    for part in parts:
        for row in part.rows:
            where.setdefault(row.key, []).append(row.shard or part.folder.name)
    for (suite, cell, case), shards in sorted(where.items()):
        if len(shards) > 1:
            place = f"{suite} {cell}" if cell else suite
            problems.append(f"{place}: {case} ran in {len(shards)} shards ({', '.join(shards)})")


def _write_junit(path: Path, parts: list[Part], not_run: list[tuple[str, str]]) -> Path:
    """One JUnit file: every shard's test suites, each named with its shard, then the groups that did not
    run as errors."""
    root = ET.Element("testsuites", name="ikedlab merged run")
    for part in parts:
        label = str(part.shard) if part.shard else part.folder.name
        for found in results.suite_files(part.copy):
            try:
                tree = ET.parse(found.junit).getroot()
            except ET.ParseError:
                continue  # a broken file: its suite shows as not run through the shard's record
            suites = [tree] if tree.tag == "testsuite" else list(tree.iter("testsuite"))
            for suite in suites:
                suite.set("name", f"{found.title} (shard {label})")
                properties = suite.find("properties")
                if properties is None:
                    properties = ET.Element("properties")
                    suite.insert(0, properties)
                ET.SubElement(properties, "property", name="shard", value=label)
                root.append(suite)
    if not_run:
        missing = ET.SubElement(
            root, "testsuite", name="not run", tests=str(len(not_run)), errors=str(len(not_run)), failures="0"
        )
        for shard, group in not_run:
            case = ET.SubElement(missing, "testcase", classname=f"shard {shard}", name=group)
            ET.SubElement(case, "error", message=f"shard {shard} left no results: {group} did not run")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _run(parts: list[Part], count: int, problems: list[str]) -> results.Run:
    commits = {p.run.commit for p in parts if p.run and p.run.commit}
    if len(commits) > 1:
        problems.append(f"shards ran different commits: {', '.join(sorted(commits))}")
    commit = min(commits) if commits else ikedlab_version()["commit"]
    rows = [row for part in parts for row in part.rows]
    return results.Run(commit, results.now(), rows, shards=max(count, 1))


def _suites(parts: list[Part], out: Path) -> list[report.Suite]:
    """Each suite once, its cases from every shard in shard order."""
    merged: dict[str, report.Suite] = {}
    for part in parts:
        label = str(part.shard) if part.shard else part.folder.name
        for suite in report.collect(part.copy, out, label):
            into = merged.setdefault(suite.title, report.Suite(suite.title, suite.file, []))
            into.cases += suite.cases
    return list(merged.values())


def _versions(parts: list[Part]) -> tuple[list[tuple[str, str]], Topology | None]:
    """Versions once where every shard agrees, per shard where they differ; the first shard's picture."""
    per_shard = []
    topology = None
    for part in parts:
        info = report.read_lab_info(part.copy)
        if info:
            per_shard.append((str(part.shard or part.folder.name), report.version_rows(info)))
            topology = topology or report.lab_topology(info)
    values: dict[str, dict[str, str]] = {}
    for label, rows in per_shard:
        for key, value in rows:
            values.setdefault(key, {})[label] = value
    rows = []
    for key, by_shard in values.items():
        if len(set(by_shard.values())) == 1 and len(by_shard) == len(per_shard):
            rows.append((key, next(iter(by_shard.values()))))
        else:
            rows += [(f"{key} (shard {label})", value) for label, value in by_shard.items()]
    return rows or [("versions", "not recorded (no scenario session ran)")], topology


def _order(label: str) -> tuple[int, str]:
    index, _, _ = label.partition("/")
    return (int(index), label) if index.isdigit() else (1 << 30, label)
