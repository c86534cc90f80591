"""`make catalogue`: its cells, the JUnit it reads back, the matrix it prints and the HTML report draws."""

import json

from lab.catalogue.cells import PHASES_FILE, CaseResult, CellOutcome, load_cells, read_results, summary, table
from lab.report import write_report

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="catalogue-iked-7.2" tests="4">
<properties><property name="lab_up_seconds" value="40.0"/></properties>
<testcase classname="scenarios.test_catalogue" name="test_case[psk]" time="57.5"/>
<testcase classname="scenarios.test_catalogue" name="test_case[ipcomp]" time="21.0">
  <skipped type="pytest.xfail" message="known on iked-7.2: no IPComp flow"/>
</testcase>
<testcase classname="scenarios.test_catalogue" name="test_case[dpd]" time="0.1">
  <skipped type="pytest.skip" message="linux: no liveness"/>
</testcase>
<testcase classname="scenarios.test_catalogue" name="test_case[transport]" time="30.2">
  <failure message="transport: steps[3]: resp: `ip xfrm`: expected an SA esp transport"/>
</testcase>
</testsuite></testsuites>
"""


def test_cells_come_from_the_interop_sides_and_the_first_is_the_guides():
    cells = load_cells()
    assert cells[0].name == "iked-7.2" and cells[0].sides is None and cells[0].lab_name is None
    by_name = {c.name: c for c in cells}
    assert by_name["iked-7.4"].sides.init.iked == "7.4" and by_name["iked-7.4"].sides.resp.iked == "7.4"
    assert by_name["iked-7.2--strongswan"].sides.resp.platform == "strongswan"
    assert by_name["iked-source"].source
    names = {c.lab_name for c in cells[1:]}
    assert len(names) == len(cells) - 1 and all(n.startswith("scn-") and len(n) <= 16 for n in names)


def cell_folder(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    evidence = tmp_path / "evidence" / "test_case[psk]"
    evidence.mkdir(parents=True)
    (evidence / PHASES_FILE).write_text('{"setup": 3.1, "steps": 6.0}')
    return tmp_path / "junit.xml"


def test_junit_gives_verdict_own_seconds_message_and_phases(tmp_path):
    found = read_results(cell_folder(tmp_path), "iked-7.2")
    # the session's lab came up during the first case: its 40 s are the lab's, not the case's
    assert found["psk"] == CaseResult("passed", 17.5, "", {"setup": 3.1, "steps": 6.0})
    assert found["ipcomp"].verdict == "xfailed" and found["dpd"].verdict == "skipped"
    assert found["transport"].verdict == "failed" and "expected an SA" in found["transport"].message


def test_the_matrix_has_a_row_per_case_and_a_column_per_cell(tmp_path):
    outcomes = [
        CellOutcome("iked-7.2", read_results(cell_folder(tmp_path), "iked-7.2"), 120.0),
        CellOutcome("iked-7.4", {"psk": CaseResult("passed", 15.0)}, 60.0),
        CellOutcome("openbsd", {}, 0.0, note="not run: no openbsd image here"),
    ]
    text = table(outcomes)
    lines = text.splitlines()
    assert lines[0].split() == ["iked-7.2", "iked-7.4"]
    assert [line.split()[0] for line in lines[1:5]] == ["dpd", "ipcomp", "psk", "transport"]
    row = {line.split()[0]: line.split()[1:] for line in lines[1:5]}
    assert row["psk"] == ["passed", "18s", "passed", "15s"] and row["ipcomp"] == ["xfailed", "21s", "-"]
    assert lines[-1] == "openbsd: not run: no openbsd image here"


def test_the_html_report_draws_the_matrix_with_links_to_evidence(tmp_path):
    outcomes = [CellOutcome("iked-7.2", read_results(cell_folder(tmp_path), "iked-7.2"), 120.0)]
    artifacts = tmp_path / "artifacts"
    (artifacts / "catalogue" / "iked-7.2" / "evidence" / "test_case[psk]").mkdir(parents=True)
    (artifacts / "catalogue" / "summary.json").write_text(json.dumps(summary(outcomes, 130.0)))
    page = write_report(artifacts).read_text()
    assert "Regression catalogue" in page and "<th>iked-7.2</th>" in page
    assert 'href="catalogue/iked-7.2/evidence/test_case[psk]/"' in page
    assert 'class="badge xfailed"' in page and 'class="badge failed"' in page
