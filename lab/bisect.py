"""`ikedlab bisect`: the first commit of an iked source tree that breaks a case, found by git bisect.

Each step builds iked at one commit (cached by the tree's content, lab/images/iked_build.py; a build that
fails is `skip`), brings the lab up from its booted base with that build on the gateways (lab/base.py: the
first step boots cold and saves the base), runs the case and gives git bisect its verdict. The case is a
catalogue case's name (scenarios/cases/NAME), a scenario test id (`scenarios/test_1_tunnel.py::test_x`: its
own pytest session, on this lab, with the build) or a command whose exit status is the verdict (0 good, 125
cannot test, anything else bad; run on the host with IKEDLAB_NAME naming the lab). Every step leaves its
evidence under OUT/NN-COMMIT/ (verdict.txt and the case's evidence), and the end names the first bad commit
with the evidence of its failure.

The walk happens in a worktree of its own (`git worktree add`), so the user's checkout is never moved; `git
bisect run` is the other way in: `ikedlab bisect --step --source . --case NAME` tests the tree as it is and
exits 0, 1 or 125.
"""

from __future__ import annotations

import enum
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import progress, settings
from lab.errors import IkedlabError, ImageError

#: `git bisect run`'s words for a commit that cannot be tested.
CANNOT_TEST = 125


class Verdict(enum.IntEnum):
    """A step's verdict, as `git bisect run` reads an exit status."""

    GOOD = 0
    BAD = 1
    SKIP = CANNOT_TEST

    @property
    def word(self) -> str:
        return {Verdict.GOOD: "good", Verdict.BAD: "bad", Verdict.SKIP: "skip"}[self]


@dataclass(frozen=True)
class Step:
    commit: str
    subject: str
    verdict: Verdict
    why: str  # one line: what the case said, or why the commit could not be tested
    evidence: Path
    seconds: float


@dataclass(frozen=True)
class Result:
    first_bad: str | None  # the first bad commit; None when skipped commits hide it
    candidates: tuple[str, ...]  # when skipped commits hide it: the commits it may be
    steps: tuple[Step, ...]

    def failing(self) -> Step | None:
        """The step that found the first bad commit bad: its evidence is the regression's."""
        return next((s for s in self.steps if s.commit == self.first_bad), None)


class BisectError(IkedlabError):
    """The bisection cannot start or go on: a tree that is no git repository, unknown revisions."""


#: Tests one checked-out tree: (tree, its commit, the step's evidence folder) -> (verdict, one line).
Tester = Callable[[Path, str, Path], tuple[Verdict, str]]


def git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise BisectError(
            f"git {' '.join(args)} in {repo}: {said[-1] if said else f'exit {done.returncode}'}"
        )
    return done.stdout


def walk(source: Path, good: str, bad: str, test: Tester, out: Path, say: Callable[[str], None]) -> Result:
    """Bisect `source`'s history between `good` and `bad` with `test`, in a worktree of its own under `out`
    (removed at the end); each step's evidence under out/NN-COMMIT/."""
    if not (source / ".git").exists() and not git(source, "rev-parse", "--git-dir", check=False).strip():
        raise BisectError(f"{source}: not a git repository", "bisect walks a tree's git history")
    good_sha, bad_sha = (
        git(source, "rev-parse", "--verify", f"{rev}^{{commit}}").strip() for rev in (good, bad)
    )
    out.mkdir(parents=True, exist_ok=True)
    tree = out / "tree"
    if tree.exists():
        git(source, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(tree, ignore_errors=True)
    git(source, "worktree", "add", "--detach", str(tree), bad_sha)
    steps: list[Step] = []

    def step_here(left: str = "") -> Step:
        commit = git(tree, "rev-parse", "HEAD").strip()
        subject = git(tree, "log", "-1", "--format=%s", commit).strip()
        evidence = out / f"{len(steps) + 1:02d}-{commit[:12]}"
        evidence.mkdir(parents=True, exist_ok=True)
        say(f"step {len(steps) + 1}{left}: {commit[:12]} {subject}")
        started = time.monotonic()
        verdict, why = test(tree, commit, evidence)
        step = Step(commit, subject, verdict, why, evidence, time.monotonic() - started)
        (evidence / "verdict.txt").write_text(f"{commit} {verdict.word}\n{why}\n")
        steps.append(step)
        say(f"  {verdict.word} in {step.seconds:.1f} s: {why}")
        return step

    try:
        said = git(tree, "bisect", "start", bad_sha, good_sha)
        while (done := _finished(said)) is None:
            step = step_here(_left(said))
            said = git(tree, "bisect", step.verdict.word, step.commit, check=False)
        first_bad, candidates = done
        if first_bad and all(s.commit != first_bad for s in steps):
            # git knew it bad without a step (the bad end itself): tested too, for the failure's evidence.
            git(tree, "bisect", "reset", check=False)
            git(tree, "checkout", "--detach", first_bad)
            step_here(" (the first bad commit, for its evidence)")
        return Result(first_bad, candidates, tuple(steps))
    finally:
        git(tree, "bisect", "reset", check=False)
        git(source, "worktree", "remove", "--force", str(tree), check=False)


_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.M)
_ONLY_SKIPPED = "There are only 'skip'ped commits left to test."
_LEFT = re.compile(r"Bisecting: (\d+) revisions? left to test after this \(roughly (\d+) steps?\)")


def _finished(said: str) -> tuple[str | None, tuple[str, ...]] | None:
    """git bisect's answer: (first bad, ()), (None, candidates) when skips hide it, or None (go on)."""
    if m := _FIRST_BAD.search(said):
        return m.group(1), ()
    if _ONLY_SKIPPED in said:
        return None, tuple(re.findall(r"^([0-9a-f]{40})$", said, re.M))
    return None


def _left(said: str) -> str:
    m = _LEFT.search(said)
    return f" (about {int(m.group(2)) + 1} to go)" if m else ""


# --- one step on a lab ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """What a step runs once the lab is up with the build: exactly one of the three."""

    catalogue: str | None = None  # a case folder's name under scenarios/cases/
    test: str | None = None  # a pytest node id under scenarios/
    command: str | None = None  # a host command; its exit status is the verdict

    def describe(self) -> str:
        return self.catalogue or self.test or self.command or "?"


def lab_tester(lab_name: str, case: Case, hosts: list[str] | None = None) -> Tester:
    """A step on lab `lab_name`: build, up from the base with the build on `hosts` (every gateway when
    None), run `case`."""

    def test(tree: Path, commit: str, evidence: Path) -> tuple[Verdict, str]:
        from lab.images.iked_build import build_iked

        try:
            build = build_iked(tree)
        except ImageError as e:
            return Verdict.SKIP, f"build failed: {e.message}"
        shutil.copyfile(build.directory / "build.log", evidence / "build.log")
        if case.test:
            return _pytest(lab_name, case.test, tree, evidence)
        return _on_lab(lab_name, case, tree, hosts, evidence)

    return test


def _on_lab(
    lab_name: str, case: Case, tree: Path, hosts: list[str] | None, evidence: Path
) -> tuple[Verdict, str]:
    from lab.blueprint import UpRequest
    from lab.errors import HypervisorError, LabError
    from lab.lab import Lab
    from lab.platforms import DaemonChoice

    lab = Lab(lab_name)
    try:
        lab.down(quiet=True)
        gateways = hosts or _gateways()
        request = UpRequest(
            platform=settings.SCENARIO_PLATFORM, iked={g: DaemonChoice(source=tree) for g in gateways}
        )
        try:
            lab.up(request)
        except (HypervisorError, ImageError, LabError) as e:
            return Verdict.SKIP, f"the lab did not come up: {e.message}"
        except IkedlabError as e:  # the tunnel with this iked: the commit is bad for any case
            _copy_evidence(lab.run_dir / "evidence", evidence / "up")
            return Verdict.BAD, f"up: {e.message}"
        if case.catalogue:
            return _catalogue(lab, case.catalogue, evidence)
        return _command(lab_name, case.command or "", evidence)
    finally:
        lab.close()


def _gateways() -> list[str]:
    from lab.placement import load_topology

    return [g.name for g in load_topology(None).gateways]


def _catalogue(lab, name: str, evidence: Path) -> tuple[Verdict, str]:  # noqa: ANN001
    from lab.catalogue import CASES_DIR
    from lab.catalogue.case import CaseError, load_case
    from lab.catalogue.runner import run_case

    try:
        case = load_case(CASES_DIR / name, lab.topology)
    except CaseError as e:
        raise BisectError(f"catalogue case {name}: {e.message}") from None
    lab.attach()
    try:
        run_case(lab, case, evidence=evidence / "case")
    except IkedlabError as e:
        return Verdict.BAD, e.message
    return Verdict.GOOD, f"{name} passed"


def _command(lab_name: str, command: str, evidence: Path) -> tuple[Verdict, str]:
    import os

    env = {**os.environ, "IKEDLAB_NAME": lab_name}
    done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env)
    (evidence / "command.log").write_text(
        f"$ {command}\n{done.stdout}{done.stderr}(exit {done.returncode})\n"
    )
    last = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    verdict = {0: Verdict.GOOD, CANNOT_TEST: Verdict.SKIP}.get(done.returncode, Verdict.BAD)
    return verdict, f"`{command}` exited {done.returncode}{': ' + last[0][:120] if last[0] else ''}"


def _pytest(lab_name: str, test: str, tree: Path, evidence: Path) -> tuple[Verdict, str]:
    from lab import PROJECT_ROOT

    argv = [
        sys.executable, "-m", "pytest", test, "-q", "--platform", settings.SCENARIO_PLATFORM,
        "--lab-name", lab_name, "--iked-source", str(tree), "--artifacts", str(evidence / "scenarios"),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True)
    (evidence / "pytest.log").write_text(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode == 0:
        return Verdict.GOOD, summary
    if done.returncode == 1:  # pytest: tests ran and failed
        return Verdict.BAD, summary
    return Verdict.SKIP, f"pytest exited {done.returncode}: {summary}"


def _copy_evidence(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)


def report(result: Result, say: Callable[[str], None] = progress.say) -> None:
    if result.first_bad is None:
        among = ", ".join(c[:12] for c in result.candidates)
        say(f"no single first bad commit: skipped commits hide it among {among}")
        return
    step = result.failing()
    subject = f" {step.subject}" if step else ""
    say(f"first bad commit: {result.first_bad}{subject}")
    if step:
        say(f"  its failure: {step.why}")
        say(f"  evidence: {step.evidence}")
