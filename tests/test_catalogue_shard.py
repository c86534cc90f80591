"""`make catalogue SHARD=i/n`: the shards together run every case on every cell exactly once, a case on a cell
being the unit dealt, and the merge reads them as the catalogue's suite."""

import json
import subprocess
from pathlib import Path

from lab import PROJECT_ROOT, results
from lab.catalogue import CASES_DIR, case_dirs
from lab.catalogue.cells import RECORD_NAME, deal, load_cells, main, pytest_argv, runner_tests, units
from lab.merge import merge
from lab.nightly import nightly_groups
from lab.results import catalogue_group, rows_from_artifacts
from lab.shard import Record, Shard, plan


def whole(cells, cases=()):
    return {(c.name, u) for c in cells for u in units(list(cases))}


def dealt(part):
    return {(cell, u) for cell, us in part.items() for u in us}


def test_two_shards_run_every_case_on_every_cell_once():
    cells = load_cells()
    assert {"test_a_wrong_expectation_fails_naming_host_command_and_expectation"} <= set(runner_tests())
    parts = [deal(cells, [], Shard(i, 2), None, None)[0] for i in (1, 2)]
    one, two = dealt(parts[0]), dealt(parts[1])
    assert one and two and not one & two
    assert one | two == whole(cells)
    assert len(whole(cells)) == len(cells) * (len(case_dirs(CASES_DIR)) + len(runner_tests()))
    # one cell alone is split too, not dealt whole to one machine
    cell = [c for c in cells if c.name == "iked-7.4"]
    parts = [deal(cell, [], Shard(i, 2), None, None)[0] for i in (1, 2)]
    assert all(p.get("iked-7.4") for p in parts)
    assert dealt(parts[0]) | dealt(parts[1]) == whole(cell) and not dealt(parts[0]) & dealt(parts[1])


def test_named_cases_are_what_the_shards_share(tmp_path):
    cells = load_cells()[:1]
    cases = ["psk", "transport", "cert-single-ca", "psk-fail"]
    parts = [deal(cells, cases, Shard(i, 3), None, None)[0] for i in (1, 2, 3)]
    assert set().union(*map(dealt, parts)) == whole(cells, cases)
    assert sum(len(dealt(p)) for p in parts) == len(whole(cells, cases))


def collected(argv, tmp_path):
    """What pytest itself would run of `argv`: the catalogue module collected, nothing started."""
    done = subprocess.run(
        [*argv, "--collect-only", "-qq", "-p", "no:cacheprovider"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if line.startswith("scenarios/test_catalogue.py::")}


def test_pytest_runs_a_shards_part_of_a_cell_and_the_parts_are_the_unsharded_run(tmp_path):
    """The deselection reaches pytest: collected with the cell's own command, shard 1 and shard 2 of the
    iked-7.4 cell are disjoint and together what the unsharded cell collects."""
    cell = next(c for c in load_cells() if c.name == "iked-7.4")
    full = collected(pytest_argv(cell, [], tmp_path, None), tmp_path)
    assert len(full) == len(units([]))
    parts = []
    for i in (1, 2):
        part = deal([cell], [], Shard(i, 2), None, None)[0][cell.name]
        parts.append(collected(pytest_argv(cell, [], tmp_path, part), tmp_path))
        assert len(parts[-1]) == len(part)
    assert parts[0] and parts[1] and not parts[0] & parts[1] and parts[0] | parts[1] == full


def test_a_cases_measured_seconds_weigh_it(tmp_path):
    """Durations are read per case on a cell (the results' group is the shard's unit): a long case is
    dealt alone."""
    cell = next(c for c in load_cells() if c.name == "iked-7.4")
    cases = ["psk", "transport", "cert-single-ca", "psk-fail"]
    folder = tmp_path / "artifacts" / "catalogue" / "iked-7.4"
    folder.mkdir(parents=True)
    seconds = {"psk": 300.0, "transport": 10.0, "cert-single-ca": 10.0, "psk-fail": 10.0}
    seconds |= dict.fromkeys(runner_tests(), 10.0)
    names = {n: n if n in runner_tests() else f"test_case[{n}]" for n in seconds}
    rows = "".join(
        f'<testcase classname="scenarios.test_catalogue" name="{names[n]}" time="{s}"/>'
        for n, s in seconds.items()
    )
    (folder / "junit.xml").write_text(f"<testsuites><testsuite>{rows}</testsuite></testsuites>")
    # as `make report` (run by make catalogue) keeps it: a results file of the artifacts' rows
    results.write(
        tmp_path / "history" / "results.json",
        results.Run("c0", results.now(), rows_from_artifacts(tmp_path / "artifacts")),
    )
    part, record = deal([cell], cases, Shard(1, 2), None, str(tmp_path / "history"))
    assert part == {"iked-7.4": ["psk"]} and not record.plan.estimated
    assert record.plan.seconds[catalogue_group("iked-7.4", "psk")] == 300.0


def test_the_nightly_plan_deals_catalogue_cases_the_catalogue_follows(tmp_path):
    groups = nightly_groups()
    cells = load_cells()
    assert {catalogue_group(c.name, u) for c, u in ((c, u) for c in cells for u in units([]))} <= set(groups)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(groups, 2).to_dict()))
    parts = [deal(cells, [], Shard(i, 2), str(path), None)[0] for i in (1, 2)]
    assert dealt(parts[0]) | dealt(parts[1]) == whole(cells) and not dealt(parts[0]) & dealt(parts[1])


def test_each_shard_records_its_part_and_the_merge_finds_nothing_missing(tmp_path, monkeypatch):
    """The iked-source cell without IKED_SOURCE runs no lab (not run), which lets main() run whole here."""
    monkeypatch.delenv("IKED_SOURCE", raising=False)
    folders = []
    for i in (1, 2):
        folder = tmp_path / f"shard-{i}-of-2"
        out = folder / "catalogue"
        assert main(["--out", str(out), "--cells", "iked-source", "--shard", f"{i}/2"]) == 0
        record = Record.load(out / RECORD_NAME)
        assert record.suite == "catalogue" and record.exit == 0 and record.shard == Shard(i, 2)
        assert (out / "iked-source" / "NOT-RUN").is_file()
        folders.append(folder)
    groups = [set(Record.load(f / "catalogue" / RECORD_NAME).selected) for f in folders]
    assert not groups[0] & groups[1]
    assert groups[0] | groups[1] == {catalogue_group("iked-source", u) for u in units([])}
    merged = merge(folders, tmp_path / "merged")
    assert not merged.problems and [s.label for s in merged.shards] == ["1/2", "2/2"]
    # without shard 2 its part is listed as not run
    lacking = merge(folders[:1], tmp_path / "merged-1")
    assert any("catalogue: shard 2/2 left no record" in p for p in lacking.problems)


def test_a_bad_shard_is_one_line(capsys, tmp_path):
    assert main(["--out", str(tmp_path), "--cells", "iked-source", "--shard", "3/2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("catalogue:") and "--shard='3/2': expected I/N" in err[0]
    assert not (tmp_path / RECORD_NAME).exists() and not Path(tmp_path / "iked-source").exists()


def test_the_merged_report_draws_one_matrix_of_both_shards_parts(tmp_path):
    """Each shard's summary.json holds its part of a cell; the merged page has every case once, each
    linking to the evidence in its own shard's copy."""
    folders = []
    for i, (case, verdict) in enumerate([("psk", "passed"), ("transport", "failed")], 1):
        folder = tmp_path / f"shard-{i}-of-2"
        cell = folder / "catalogue" / "iked-7.4"
        (cell / "evidence" / f"test_case[{case}]").mkdir(parents=True)
        failure = '<failure message="resp: no SA"/>' if verdict == "failed" else ""
        (cell / "junit.xml").write_text(
            f'<testsuites><testsuite><testcase classname="scenarios.test_catalogue" name="test_case[{case}]"'
            f' time="20">{failure}</testcase></testsuite></testsuites>'
        )
        result = {"verdict": verdict, "seconds": 20.0, "message": "", "phases": {}}
        cells = {"iked-7.4": {"wall_seconds": 60.0 * i, "note": "", "results": {case: result}}}
        (folder / "catalogue" / "summary.json").write_text(
            json.dumps({"wall_seconds": 60.0 * i, "cells": cells})
        )
        groups = {catalogue_group("iked-7.4", c): [] for c in ("psk", "transport")}
        chosen = plan(groups, 2)
        mine = {g: [] for g in chosen.groups(i)}
        assert mine == {catalogue_group("iked-7.4", case): []}  # the planner deals them as the folders say
        Record("catalogue", Shard(i, 2), chosen, mine, finished=results.now(), exit=i - 1).write(
            folder / "catalogue" / RECORD_NAME
        )
        folders.append(folder)
    merged = merge(folders, tmp_path / "merged")
    assert not merged.problems
    page = merged.report.read_text()
    assert page.count("<th>iked-7.4</th>") == 1 and "(make catalogue: case × cell, 120 s)" in page
    assert 'href="shards/1-of-2/catalogue/iked-7.4/evidence/test_case[psk]/"' in page
    assert 'href="shards/2-of-2/catalogue/iked-7.4/evidence/test_case[transport]/"' in page
