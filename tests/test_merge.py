"""`ikedlab report --merge` (lab/merge.py) over recorded shards of a real scenario run (tests/data/nightly/):
the merge gives the unsharded run's test ids and verdicts, says which shard ran what, and shows missing,
unfinished and overlapping shards as such."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import cli, results
from lab.merge import MergeError, merge

DATA = Path(__file__).parent / "data" / "nightly"
SHARDS = [DATA / "shard-1-of-2", DATA / "shard-2-of-2"]


def verdicts(rows: list[results.Row]) -> set[tuple[str, str]]:
    return {(r.case, r.verdict) for r in rows}


def test_two_recorded_shards_merge_into_the_unsharded_runs_tests_and_verdicts(tmp_path: Path) -> None:
    merged = merge(SHARDS, tmp_path / "merged")
    assert merged.ok and merged.problems == []
    whole = results.rows_from_artifacts(DATA / "base")
    ran = results.load(merged.results).rows
    assert verdicts(ran) == verdicts(whole) and len(ran) == len(whole) == 35
    assert {r.shard for r in ran} == {"1/2", "2/2"}
    by_shard = {s.label: s for s in merged.shards}
    assert by_shard["1/2"].status == by_shard["2/2"].status == "passed"
    assert by_shard["1/2"].cases + by_shard["2/2"].cases == 35
    assert not set(by_shard["1/2"].groups) & set(by_shard["2/2"].groups)
    assert "scenarios/test_walkthrough.py" in by_shard["1/2"].groups + by_shard["2/2"].groups
    suites = ET.parse(merged.junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["Scenarios (shard 1/2)", "Scenarios (shard 2/2)"]
    assert sum(len(s.findall("testcase")) for s in suites) == 35
    page = merged.report.read_text()
    assert "<h2>Shards</h2>" in page and page.count("<td>1/2</td>") == 1 + by_shard["1/2"].cases


def test_a_missing_shard_shows_and_everything_it_was_dealt_did_not_run(tmp_path: Path) -> None:
    merged = merge([SHARDS[0]], tmp_path / "merged")
    assert not merged.ok
    missing = next(s for s in merged.shards if s.label == "2/2")
    assert missing.status == "missing" and "scenarios/test_walkthrough.py" in missing.groups
    assert any("shard 2/2 left no record" in p and "test_walkthrough.py" in p for p in merged.problems)
    not_run = [
        c for s in ET.parse(merged.junit).getroot().iter("testsuite") if s.get("name") == "not run" for c in s
    ]
    assert {c.get("name") for c in not_run} == set(missing.groups)
    assert all(c.find("error") is not None for c in not_run)
    page = merged.report.read_text()
    assert "ikedlab report: failed" in page and "What did not go as planned" in page


def test_a_shard_that_never_finished_and_a_folder_that_is_not_there(tmp_path: Path) -> None:
    killed = tmp_path / "shard-2"
    shutil.copytree(SHARDS[1], killed)
    record = killed / "junit-scenarios.shard.json"
    data = json.loads(record.read_text())
    data["exit"], data["finished"] = None, ""
    record.write_text(json.dumps(data))
    merged = merge([SHARDS[0], killed, tmp_path / "gone"], tmp_path / "merged")
    states = {s.label: s.status for s in merged.shards}
    assert states == {"1/2": "passed", "2/2": "unfinished", "gone": "missing"}
    assert any("never finished" in p for p in merged.problems)
    assert any(p.startswith(f"{tmp_path / 'gone'}: no such folder") for p in merged.problems)


def test_a_test_run_by_two_shards_and_plans_that_differ_are_problems(tmp_path: Path) -> None:
    twice = tmp_path / "again"
    shutil.copytree(SHARDS[0], twice)
    record = twice / "junit-scenarios.shard.json"
    data = json.loads(record.read_text())
    data["shard"] = "2/2"
    data["plan"]["groups"]["scenarios/test_1_tunnel.py"]["shard"] = 2
    record.write_text(json.dumps(data))
    merged = merge([SHARDS[0], twice], tmp_path / "merged")
    assert any(
        "test_1_tunnel.py::test_ike_sa_established" in p and "ran in 2 shards" in p for p in merged.problems
    )
    assert any("followed plan" in p for p in merged.problems)


def test_evidence_is_copied_through_the_redactor_and_linked(tmp_path: Path) -> None:
    shard = tmp_path / "s1"
    shutil.copytree(SHARDS[0], shard)
    evidence = shard / "scenarios" / "test_initlan_reaches_resplan"
    evidence.mkdir(parents=True)
    # A stand-in for `ip xfrm state` output (its key line as iproute2's xfrm_state_print spells it).
    (evidence / "resp.iked.log").write_text("\tenc cbc(aes) 0x" + "ab" * 32 + "\n")
    (evidence / "wan1.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x00binary")
    merged = merge([shard, SHARDS[1]], tmp_path / "merged")
    copied = tmp_path / "merged" / "shards" / "1-of-2" / "scenarios" / "test_initlan_reaches_resplan"
    assert "ab" * 32 not in (copied / "resp.iked.log").read_text()
    assert "0x[redacted]" in (copied / "resp.iked.log").read_text()
    assert (copied / "wan1.pcap").read_bytes() == b"\xd4\xc3\xb2\xa1\x00binary"
    page = merged.report.read_text()
    assert 'href="shards/1-of-2/scenarios/test_initlan_reaches_resplan/resp.iked.log"' in page


def test_the_output_may_not_sit_inside_a_shard_folder(tmp_path: Path) -> None:
    shard = tmp_path / "s1"
    shutil.copytree(SHARDS[0], shard)
    with pytest.raises(MergeError, match="inside the shard folder"):
        merge([shard], shard / "merged")


def test_the_command_merges_keeps_history_and_fails_when_a_shard_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "report",
        "--merge",
        *map(str, SHARDS),
        "-o",
        str(tmp_path / "m"),
        "--history",
        str(tmp_path / "h"),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "shard 1/2: passed" in out and (tmp_path / "m" / "trend.html").is_file()
    assert len(list((tmp_path / "h").glob("*.json"))) == 1
    assert cli.main(["report", "--merge", str(SHARDS[0]), "-o", str(tmp_path / "m2")]) == 1
    assert "problem: scenarios: shard 2/2 left no record" in capsys.readouterr().out
    assert cli.main(["report", "--merge", str(SHARDS[0])]) == 1
    assert "-o DIR is required" in capsys.readouterr().err


def test_a_single_runs_report_writes_its_results_file(tmp_path: Path) -> None:
    shutil.copytree(DATA / "base", tmp_path / "run")
    assert cli.main(["report", str(tmp_path / "run")]) == 0
    run = results.load(tmp_path / "run" / "results.json")
    assert len(run.rows) == 35 and run.shards == 1 and run.commit
