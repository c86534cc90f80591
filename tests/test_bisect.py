"""The bisect walk (lab/bisect.py) over a real git history, with a stand-in for the lab step: each commit's
state.txt says whether it builds and whether it carries the regression. The real step (a build, a lab from
its base, a catalogue case) runs in nightly/test_bisect.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab import bisect, cli
from lab.bisect import Verdict


def history(repo: Path, states: list[str]) -> list[str]:
    """A repository whose commits carry `states` in state.txt, in order; their SHAs."""
    repo.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)

    run("init", "-q", "-b", "main")
    run("config", "user.email", "t@example.invalid")
    run("config", "user.name", "t")
    shas = []
    for i, state in enumerate(states):
        (repo / "state.txt").write_text(f"{state}\n{i}\n")
        run("add", "state.txt")
        run("commit", "-q", "-m", f"commit {i}: {state}")
        shas.append(run("rev-parse", "HEAD").stdout.strip())
    return shas


def stand_in(tested: list[str]) -> bisect.Tester:
    def test(tree: Path, commit: str, evidence: Path) -> tuple[Verdict, str]:
        tested.append(commit)
        state = (tree / "state.txt").read_text()
        if "no build" in state:
            return Verdict.SKIP, "build failed: iked/ikev2.c:1: error"
        if "regression" in state:
            (evidence / "case.log").write_text("transport: expected an SA esp transport; found esp tunnel\n")
            return Verdict.BAD, "transport: expected an SA esp transport; found esp tunnel"
        return Verdict.GOOD, "transport passed"

    return test


def test_the_walk_names_the_commit_that_brought_the_regression(tmp_path: Path) -> None:
    states = ["fine", "fine", "no build", "fine", "regression", "regression, more", "regression, more"]
    shas = history(tmp_path / "iked", states)
    said: list[str] = []
    tested: list[str] = []
    result = bisect.walk(
        tmp_path / "iked", shas[0], shas[-1], stand_in(tested), tmp_path / "out", said.append
    )
    assert result.first_bad == shas[4]
    failing = result.failing()
    assert failing and failing.verdict is Verdict.BAD and "found esp tunnel" in failing.why
    assert (failing.evidence / "case.log").is_file() and (
        failing.evidence / "verdict.txt"
    ).read_text().startswith(f"{shas[4]} bad")
    assert len(tested) <= 4 and shas[0] not in tested  # a bisection, not a walk through every commit
    assert any(line.startswith("step 1") for line in said)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path / "iked"), *args], capture_output=True, text=True
        ).stdout

    assert git("rev-parse", "HEAD").strip() == shas[-1]  # the user's checkout never moved
    assert len(git("worktree", "list").splitlines()) == 1 and not git("for-each-ref", "refs/bisect")
    assert not (tmp_path / "out" / "tree").exists()


def test_a_first_bad_commit_git_knew_without_a_step_is_tested_for_its_evidence(tmp_path: Path) -> None:
    shas = history(tmp_path / "iked", ["fine", "fine", "regression"])
    tested: list[str] = []
    result = bisect.walk(
        tmp_path / "iked", shas[1], shas[2], stand_in(tested), tmp_path / "out", lambda _: None
    )
    assert result.first_bad == shas[2] and tested == [shas[2]]
    assert result.failing() is not None


def test_skipped_commits_that_hide_the_first_bad_one_are_named(tmp_path: Path) -> None:
    shas = history(tmp_path / "iked", ["fine", "no build", "regression, no build", "regression"])
    said: list[str] = []
    result = bisect.walk(tmp_path / "iked", shas[0], shas[-1], stand_in([]), tmp_path / "out", said.append)
    assert result.first_bad is None and set(result.candidates) >= {shas[1], shas[2]}
    bisect.report(result, said.append)
    assert said[-1].startswith("no single first bad commit: skipped commits hide it among ")


def test_not_a_repository_or_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(bisect.BisectError) as err:
        bisect.walk(tmp_path, "v1", "v2", stand_in([]), tmp_path / "out", lambda _: None)
    assert str(err.value) == f"{tmp_path}: not a git repository"
    shas = history(tmp_path / "iked", ["fine"])
    with pytest.raises(bisect.BisectError) as err:
        bisect.walk(tmp_path / "iked", "no-such-tag", shas[0], stand_in([]), tmp_path / "out", lambda _: None)
    assert "no-such-tag" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("state", "status"), [("fine", 0), ("regression", 1), ("no build", 125)])
def test_a_step_under_git_bisect_run_exits_0_1_or_125(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str, status: int
) -> None:
    history(tmp_path / "iked", [state])
    monkeypatch.setattr(bisect, "lab_tester", lambda name, case, hosts=None: stand_in([]))
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    argv = ["--name", "bis", "bisect", "--step", "--source", str(tmp_path / "iked"), "--case", "transport"]
    assert cli.main(argv) == status


def test_a_host_command_decides_by_its_exit_status(tmp_path: Path) -> None:
    verdicts = [bisect._command("lab-x", f"echo $IKEDLAB_NAME; exit {n}", tmp_path)[0] for n in (0, 3, 125)]
    assert verdicts == [Verdict.GOOD, Verdict.BAD, Verdict.SKIP]
    assert (tmp_path / "command.log").read_text().startswith("$ echo $IKEDLAB_NAME; exit 125\nlab-x\n")
