"""Every exercise can be solved: once started, the lab is broken (a check fails, and the guide's command of
its solution shows the line the solution names); the solution's steps repair it (every check holds); stopped,
the lab is as `up` made it. So an exercise can never become unsolvable, nor one whose fault the guide's
commands do not show.

Two exercises run in `make test`, every one in `make nightly` (each costs two restores, its fault and its
repair: docs/exercises.md has the measured seconds)."""

import time

import pytest

from lab import settings
from lab.exercises import session
from lab.exercises.exercise import load_all

#: In `make test`: one fault iked reports in its log, one it does not see at all.
IN_MAKE_TEST = ("wrong-srcid", "forwarding-off")
REPAIRED_WITHIN = settings.SA_TIMEOUT  # the solution's restart to every check holding: a new tunnel


def _params():
    return [
        pytest.param(e, id=e.name, marks=() if e.name in IN_MAKE_TEST else (pytest.mark.nightly,))
        for e in load_all()
    ]


@pytest.mark.parametrize("exercise", _params())
def test_exercise_is_broken_at_start_and_repaired_by_its_solution(lab, exercise):
    if why := session.why_not(lab, exercise):
        pytest.skip(why)
    session.start(lab, exercise)
    try:
        assert session.running(lab).name == exercise.name
        broken = session.judge(lab, exercise, lab.hosts)
        assert not broken.repaired, f"{exercise.name}: every check holds right after start: no fault"
        seen, output = session.shown_by_guide_command(lab, exercise, lab.hosts)
        found = exercise.found_with
        assert seen, (
            f"{exercise.name}: on {found.on}, `{found.command}` does not show {found.shows!r}:\n{output}"
        )
        session.repair(lab, exercise, lab.hosts)
        deadline = time.monotonic() + REPAIRED_WITHIN
        verdict = session.judge(lab, exercise, lab.hosts)
        while not verdict.repaired and time.monotonic() < deadline:
            verdict = session.judge(lab, exercise, lab.hosts)  # each judgement waits for its checks
        still = "; ".join(f.detail for f in verdict.failed)
        assert verdict.repaired, (
            f"{exercise.name}: its solution did not repair it within {REPAIRED_WITHIN:g}s: {still}"
        )
    finally:
        session.stop(lab)
    assert session.running(lab) is None
