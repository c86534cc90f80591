"""Results files and the trend over runs (lab/results.py, lab/trend.py), from a recorded scenario run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lab.results import ResultsError, Row, Run, SuiteFile, keep, load, load_history, node_id, rows_of, write
from lab.trend import case_trend, trends, write_trend

DATA = Path(__file__).parent / "data" / "nightly"
RECORDED = SuiteFile("scenarios", "Scenarios", DATA / "base" / "junit-scenarios.xml", "linux", None)
PING = "scenarios/test_2_ping.py::test_initlan_reaches_resplan"


def test_node_ids_come_back_from_junit() -> None:
    assert node_id("scenarios.test_2_ping", "test_x[a-b]") == "scenarios/test_2_ping.py::test_x[a-b]"
    assert node_id("tests.test_cli.TestHelp", "test_y") == "tests/test_cli.py::TestHelp::test_y"
    assert node_id("test_7_restart", "test_z") == "test_7_restart.py::test_z"
    rows = rows_of(RECORDED)
    assert len(rows) == 35 and {r.verdict for r in rows} == {"passed"}
    assert PING in {r.case for r in rows} and {r.group for r in rows if r.case == PING} == {
        "scenarios/test_2_ping.py"
    }


def test_a_results_file_round_trips_and_names_what_is_wrong(tmp_path: Path) -> None:
    run = Run("abc123", "2026-12-01T02:00:00Z", rows_of(RECORDED), label="nightly 41")
    assert load(write(tmp_path / "results.json", run)).rows == run.rows
    (tmp_path / "bad.json").write_text(
        '{"format": "ikedlab-results/1", "cases": [{"suite": "s", "group": "g", "case": "c", '
        '"verdict": "green", "seconds": 1}]}'
    )
    with pytest.raises(ResultsError, match=r"bad\.json: cases\[0\]: verdict 'green' is not one of passed"):
        load(tmp_path / "bad.json")


def three_runs(folder: Path, last_failing: set[str]) -> None:
    base = rows_of(RECORDED)
    for day, failing in ((1, set()), (2, set()), (3, last_failing)):
        rows = [replace(r, verdict="failed") if r.case in failing else r for r in base]
        run = Run(f"commit{day}", f"2026-12-0{day}T02:00:00Z", rows, label=f"night {day}")
        keep(write(folder / f"run{day}" / "results.json", run), folder / "history")


def test_a_case_failing_in_the_last_run_only_is_a_new_failure(tmp_path: Path) -> None:
    three_runs(tmp_path, {PING})
    runs = load_history(tmp_path / "history")
    assert [r.label for r in runs] == ["night 1", "night 2", "night 3"]
    found = trends(runs)
    assert (found[0].case, found[0].status, found[0].first_failed) == (PING, "new failure", 2)
    assert all(t.status == "passing" for t in found[1:])
    page = write_trend(tmp_path / "history", tmp_path / "out").read_text()
    assert "1 new failure" in page and "34 passing" in page
    row = next(r for r in page.split("<tr>") if "test_initlan_reaches_resplan" in r)
    assert 'class="status new-failure">new failure' in row and row.count(">night 3<") == 2  # first / since


def test_statuses_over_runs() -> None:
    def status(*verdicts: str | None) -> str:
        return case_trend("s", "", "c", verdicts).status

    assert status("passed", "passed", "failed") == "new failure"
    assert status(None, None, "error") == "new failure"  # a new case that fails at once
    assert status("passed", "failed", "failed") == "failing"
    assert status("failed", "passed", "failed") == "flaky"
    assert status("failed", "failed", "passed") == "fixed"
    assert status("passed", "failed", "passed", "passed") == "flaky"
    assert status("failed", "passed", "passed") == "passing"
    assert status("passed", "failed", "skipped") == "not run"
    assert status("xfailed", "xfailed") == "passing"
    trend = case_trend("s", "", "c", ("failed", "passed", "failed", "skipped", "failed"))
    assert (trend.failures, trend.ran, trend.flips, trend.failing_since, trend.first_failed) == (
        3,
        4,
        2,
        2,
        0,
    )
    assert trend.flip_rate == pytest.approx(2 / 3) and trend.failure_rate == 0.75


def test_a_history_of_junit_files_only_is_runs_too(tmp_path: Path) -> None:
    runs = load_history(DATA / "base")
    assert len(runs) == 1 and len(runs[0].rows) == 35
    with pytest.raises(ResultsError, match="no such file or folder"):
        load_history(tmp_path / "nothing")


def test_the_same_case_on_two_cells_is_two_cases() -> None:
    a = Row("interop", "a--b", "interop/a--b", "scenarios/test_1_tunnel.py::t", "passed", 1.0)
    b = replace(a, cell="c--d", group="interop/c--d", verdict="failed")
    found = trends([Run("c", "t", [a, b])])
    assert [(t.cell, t.status) for t in found] == [("c--d", "new failure"), ("a--b", "passing")]
