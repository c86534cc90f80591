"""The nightly's own check against real labs: two shards of `make test-scenarios`, each a process of its own
with its own artifacts folder, merged by `ikedlab report --merge`, give the same test ids and verdicts as one
unsharded run.

Three scenario runs one after the other (one lab at a time: ~3 x 3 minutes on a quiet machine, each shard's
lab comes up on its own), so `make test-nightly` runs it inside `make nightly`, not `make test`. The merge
logic itself has fast tests over recorded shards (tests/test_merge.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab import PROJECT_ROOT, results
from lab.merge import merge

#: One scenario run's deadline: a cold lab on a loaded machine takes minutes before the first scenario.
RUN_TIMEOUT = 3600
#: What an outer make (`make nightly SHARD=1/2 PYTEST_ARGS=...`) puts in the environment that must not reach
#: these runs (make exports its command line's variables: an outer --basetemp once wiped this test's folder).
OUTER = (
    "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "ARTIFACTS", "SHARD", "SHARD_PLAN",
    "SHARD_DURATIONS", "PYTEST_ARGS", "SCENARIO_ARGS", "SCENARIO_MARKS", "INTEROP_ARGS",
)  # fmt: skip


def make_scenarios(log: Path, *variables: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in OUTER}
    with open(log, "w") as out:
        done = subprocess.run(
            ["make", "--no-print-directory", "test-scenarios", *variables],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT,
        )  # fmt: skip
    return done.returncode


def test_two_shards_merged_are_the_unsharded_run(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    make_scenarios(tmp_path / "whole.log", f"ARTIFACTS={whole}")
    expected = results.rows_from_artifacts(whole)
    if not expected:
        pytest.fail(f"the unsharded run left no JUnit report: see {tmp_path / 'whole.log'}")
    shards = [tmp_path / f"shard-{i}-of-2" for i in (1, 2)]
    for i, folder in enumerate(shards, 1):
        make_scenarios(
            tmp_path / f"{folder.name}.log", f"SHARD={i}/2", f"ARTIFACTS={folder}", f"SHARD_DURATIONS={whole}"
        )
    merged = merge(shards, tmp_path / "merged")
    got = results.load(merged.results).rows
    assert sorted((r.case, r.verdict) for r in got) == sorted((r.case, r.verdict) for r in expected), (
        f"the merge of {shards[0]} and {shards[1]} is not the run in {whole}"
    )
    assert not merged.problems, merged.problems
    ran = [set(s.groups) for s in merged.shards]
    assert all(ran) and not ran[0] & ran[1], f"each shard runs its own modules: {ran}"
