"""Shards (lab/shard.py, lab/shard_plugin.py): disjoint parts that together are the whole run, whole groups
to a shard, balanced by earlier runs' durations, the same plan on every machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab import PROJECT_ROOT
from lab.nightly import nightly_groups
from lab.results import Durations, Row, Run, write
from lab.shard import Plan, Record, Shard, ShardError, choose, plan

DATA = Path(__file__).parent / "data" / "nightly"


def test_a_shard_is_i_of_n() -> None:
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3" and Shard(2, 3).label == "2-of-3"
    for bad in ("0/2", "3/2", "1", "a/b", "", "1/0"):
        with pytest.raises(ShardError, match=r"SHARD=.*expected I/N with 1 <= I <= N"):
            Shard.parse(bad, "SHARD")


def test_every_group_lands_in_exactly_one_shard_whatever_the_count() -> None:
    groups = {
        f"scenarios/test_{i}.py": [f"scenarios/test_{i}.py::t{j}" for j in range(i % 4 + 1)]
        for i in range(13)
    }
    for count in (1, 2, 3, 5, 13, 20):
        made = plan(groups, count)
        assert set(made.assignment) == set(groups)
        assert sorted(g for i in range(1, count + 1) for g in made.groups(i)) == sorted(groups)
        assert set(made.assignment.values()) <= set(range(1, count + 1))


def test_the_plan_does_not_depend_on_the_order_groups_were_found_in() -> None:
    groups = {f"m{i}": ["a"] * (i % 3 + 1) for i in range(9)}
    reversed_groups = dict(reversed(list(groups.items())))
    assert plan(groups, 3).assignment == plan(reversed_groups, 3).assignment
    assert plan(groups, 3).fingerprint == plan(reversed_groups, 3).fingerprint


def test_without_durations_a_test_weighs_one_second() -> None:
    made = plan({"big": ["a", "b", "c", "d"], "s1": ["a"], "s2": ["a"], "s3": ["a"]}, 2)
    assert made.groups(1) == ["big"] and made.groups(2) == ["s1", "s2", "s3"]
    assert made.loads() == [4.0, 3.0] and made.estimated == {"big", "s1", "s2", "s3"}


def test_durations_from_earlier_runs_balance_the_shards() -> None:
    """Counting tests would put the long module with a short one; the measured seconds keep it alone."""
    groups = {"long": ["x"], "a": ["1", "2"], "b": ["1", "2"], "c": ["1", "2"]}
    assert plan(groups, 2).groups(2) == ["b", "long"]  # by count: 2+2 against 2+1
    rows = [Row("scenarios", "linux", "long", "x", "passed", 60.0)]
    rows += [Row("scenarios", "linux", g, c, "passed", 5.0) for g in "abc" for c in "12"]
    made = plan(groups, 2, Durations.of_runs([Run("c0", "2026-12-01T00:00:00Z", rows)]))
    assert made.groups(1) == ["long"] and made.groups(2) == ["a", "b", "c"]
    assert made.loads() == [60.0, 30.0] and not made.estimated


def test_the_newest_run_counts_and_a_new_test_weighs_the_median() -> None:
    old = Run("c0", "2026-12-01T00:00:00Z", [Row("s", "", "g", "t1", "passed", 100.0)])
    new = Run("c1", "2026-12-02T00:00:00Z", [Row("s", "", "g", "t1", "passed", 10.0)])
    durations = Durations.of_runs([old, new])
    made = plan({"g": ["t1", "t2"]}, 1, durations)
    assert made.seconds["g"] == 20.0 and made.estimated == {"g"}


def test_cells_weigh_their_whole_lab_from_the_last_run() -> None:
    rows = [Row("interop", "a--b", "interop/a--b", f"t{i}", "passed", 50.0) for i in range(3)]
    made = plan({"interop/a--b": [], "interop/c--d": []}, 2, Durations.of_runs([Run("c", "t", rows)]))
    assert made.seconds == {"interop/a--b": 150.0, "interop/c--d": 50.0}  # unknown: the median case


def test_a_whole_runs_plan_is_followed_and_must_fit_the_checkout(tmp_path: Path) -> None:
    whole = plan(nightly_groups(), 3)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(whole.to_dict()))
    scenario_groups = {g: [] for g in whole.assignment if g.startswith("scenarios/")}
    assert choose(scenario_groups, Shard(2, 3), path, None) == Plan.load(path)
    with pytest.raises(ShardError, match=r"plan\.json: a plan for 3 shards, not for shard 1/2"):
        choose(scenario_groups, Shard(1, 2), path, None)
    with pytest.raises(ShardError, match=r"plan\.json: no shard for scenarios/test_new\.py") as info:
        choose({"scenarios/test_new.py": []}, Shard(1, 3), path, None)
    assert "another checkout" in (info.value.hint or "")
    (tmp_path / "bad.json").write_text('{"format": "ikedlab-shard-plan/1", "count": 2, "groups": {"g": {}}}')
    with pytest.raises(ShardError, match=r"bad\.json: not a shard plan"):
        Plan.load(tmp_path / "bad.json")


def test_the_nightly_plan_covers_every_module_and_every_interop_cell() -> None:
    groups = nightly_groups()
    assert "scenarios/test_1_tunnel.py" in groups and "faults/test_interrupts.py" in groups
    assert "tests/test_shard.py" in groups and "interop/iked-7.2--iked-7.4" in groups
    modules = {
        f"{d}/{p.name}"
        for d in ("tests", "scenarios", "faults")
        for p in (PROJECT_ROOT / d).glob("test_*.py")
    }
    assert modules <= set(groups)


def test_a_record_round_trips_and_names_its_file_when_broken(tmp_path: Path) -> None:
    record = Record("scenarios", Shard(1, 2), plan({"a": ["x"], "b": ["y"]}, 2), {"a": ["x"]})
    record.write(tmp_path / "r.shard.json")
    again = Record.load(tmp_path / "r.shard.json")
    assert (again.shard, again.plan, again.selected, again.exit) == (
        Shard(1, 2),
        record.plan,
        {"a": ["x"]},
        None,
    )
    (tmp_path / "bad.shard.json").write_text("{}")
    with pytest.raises(ShardError, match=r"bad\.shard\.json: not a shard record"):
        Record.load(tmp_path / "bad.shard.json")


# --- the pytest plugin, in real pytest processes ----------------------------------------------------------

SUITE = {
    "test_alpha.py": "def test_a1(): pass\ndef test_a2(): pass\ndef test_a3(): pass\n",
    "test_beta.py": "def test_b1(): pass\n",
    "test_gamma.py": "import pytest\n@pytest.mark.slow\ndef test_g1(): pass\ndef test_g2(): assert False\n",
    "test_delta.py": "import pytest\n@pytest.mark.xdist_group('lab')\ndef test_d1(): pass\n",
    "test_epsilon.py": "import pytest\n@pytest.mark.xdist_group('lab')\ndef test_e1(): pass\n",
}


def pytest_run(folder: Path, *args: str) -> tuple[int, list[str]]:
    """pytest over `folder` as the project runs it (-p lab.shard_plugin); the test ids it ran."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "lab.shard_plugin", "-p", "no:cacheprovider", "-q", "-rA",
         "-o", "markers=slow", str(folder), *args],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    ran = [line.split()[1] for line in done.stdout.splitlines() if line.startswith(("PASSED ", "FAILED "))]
    return done.returncode, sorted(ran)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir()
    for name, text in SUITE.items():
        (folder / name).write_text(text)
    (folder / "pytest.ini").write_text("[pytest]\n")
    return folder


def test_two_shards_in_two_processes_run_the_whole_suite_once(suite: Path) -> None:
    _, whole = pytest_run(suite)
    parts = [pytest_run(suite, "--shard", f"{i}/2", f"--junitxml={suite}/j{i}.xml") for i in (1, 2)]
    assert sorted(parts[0][1] + parts[1][1]) == whole and not set(parts[0][1]) & set(parts[1][1])
    assert len(whole) == 8
    records = [Record.load(suite / f"j{i}.shard.json") for i in (1, 2)]
    assert records[0].plan == records[1].plan and [r.exit for r in records] == [p[0] for p in parts]
    for ran, record in zip(parts, records, strict=True):  # whole modules; one xdist_group stays together
        assert {t.split("::")[0] for t in ran[1]} == {g for g in record.selected if g.endswith(".py")} | (
            {"test_delta.py", "test_epsilon.py"} if "lab" in record.selected else set()
        )


def test_a_shard_deals_only_what_the_marks_select(suite: Path) -> None:
    _, whole = pytest_run(suite, "-m", "not slow")
    parts = [pytest_run(suite, "-m", "not slow", "--shard", f"{i}/3")[1] for i in (1, 2, 3)]
    assert sorted(parts[0] + parts[1] + parts[2]) == whole and "test_gamma.py::test_g1" not in str(parts)


def test_a_shard_dealt_nothing_succeeds(suite: Path) -> None:
    code, ran = pytest_run(suite, "-k", "test_b1", "--shard", "2/2", f"--junitxml={suite}/j.xml")
    assert (code, ran) == (0, []) and Record.load(suite / "j.shard.json").exit == 0


def test_a_bad_shard_is_a_usage_error(suite: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "lab.shard_plugin", str(suite), "--shard", "3/2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4 and "--shard='3/2': expected I/N with 1 <= I <= N" in done.stderr


def test_durations_come_from_results_files_and_junit_files(tmp_path: Path) -> None:
    run = Run(
        "c1",
        "2026-12-01T00:00:00Z",
        [Row("scenarios", "linux", "scenarios/m.py", "scenarios/m.py::t", "passed", 7.0)],
    )
    write(tmp_path / "history" / "r.json", run)
    from lab.shard import durations

    assert durations(tmp_path / "history").cases == {("scenarios/m.py", "scenarios/m.py::t"): 7.0}
    recorded = durations(DATA / "base")  # a recorded unsharded run: JUnit only
    assert recorded.groups["scenarios/test_6_wrong_key.py"] > 10
    assert durations(None) == Durations()


def test_a_nightly_plan_weighs_an_untimed_interop_cell_as_a_lab_not_a_second() -> None:
    from lab.nightly import prior

    made = plan(nightly_groups(), 3, None, prior)
    cells = [sum(g.startswith("interop/") for g in made.groups(i)) for i in (1, 2, 3)]
    assert min(cells) >= 2 and prior("interop/a--b") == 200.0 and prior("tests/test_x.py") == 1.5
    assert max(made.loads()) - min(made.loads()) <= max(made.seconds.values())  # LPT: within one group
