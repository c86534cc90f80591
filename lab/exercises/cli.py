"""`ikedlab exercise list|start|check|hint|solution|stop`: thin, like lab/cli.py; the work is in session.py.

What a learner reads is written for a learner: the symptom, hints, what is still wrong in their words.
ikedlab's own view of a failed check (host, command, expected, found) appears only with --debug.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any

from lab import progress
from lab.cli_repro import on_lab
from lab.ownership import ikedlab_for

if TYPE_CHECKING:
    from lab.exercises.exercise import Exercise
    from lab.exercises.session import Verdict
    from lab.lab import Lab

EXIT_NOT_REPAIRED = 1
WIDTH = 100
SHOWN_WRONG = 2  # lines `check` gives to what is still wrong


def add_commands(sub: Any) -> None:
    exercise = sub.add_parser(
        "exercise", help="practise troubleshooting: a broken lab to repair, checked, with hints"
    )
    actions = exercise.add_subparsers(dest="exercise_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="the exercises, and which one runs in the lab").set_defaults(
        handler=on_lab(cmd_list)
    )
    start = actions.add_parser("start", help="restore the lab and break it as the exercise says")
    start.add_argument("exercise", metavar="NAME")
    start.set_defaults(handler=on_lab(cmd_start))
    actions.add_parser("check", help="is it repaired? what is still wrong").set_defaults(
        handler=on_lab(cmd_check)
    )
    actions.add_parser("hint", help="the next hint, from gentle to explicit").set_defaults(
        handler=on_lab(cmd_hint)
    )
    actions.add_parser("solution", help="the fix, and the command that would have found it").set_defaults(
        handler=on_lab(cmd_solution)
    )
    actions.add_parser("stop", help="put the lab back as `up` made it").set_defaults(handler=on_lab(cmd_stop))


def _paragraph(text: str, indent: str = "  ") -> str:
    return "\n".join(
        textwrap.fill(p, WIDTH, initial_indent=indent, subsequent_indent=indent) for p in text.split("\n\n")
    )


def cmd_list(lab: Lab, args: argparse.Namespace) -> int:
    from lab.errors import LabError
    from lab.exercises.exercise import load_all
    from lab.exercises.session import running, why_not

    try:
        found = running(lab)
        topology = lab.read().topology
    except LabError:
        found, topology = None, None  # no lab: the exercises all the same
    exercises = load_all(topology=topology)
    width = max((len(e.name) for e in exercises), default=0)
    for e in exercises:
        mark = "*" if found and found.name == e.name else " "
        section = e.practises.split(" ", 1)[0].rstrip(".")
        unavailable = why_not(lab, e) if topology else None
        print(
            f"{mark} {e.name:<{width}}  {e.title}  (guide §{section})"
            + (f"  [{unavailable}]" if unavailable else "")
        )
    if found:
        print(f"* runs in lab '{lab.name}'")
    print(f"start one: {ikedlab_for(lab.name)} exercise start NAME")
    return 0


def cmd_start(lab: Lab, args: argparse.Namespace) -> int:
    from lab.exercises.exercise import find
    from lab.exercises.session import start

    find(args.exercise)  # a name that is no exercise is said first, lab or no lab
    exercise = find(args.exercise, topology=lab.read().topology)
    progress.set_quiet(not args.debug)  # the restore's steps are ikedlab's business, the fault a secret
    try:
        seconds = start(lab, exercise)
    finally:
        progress.set_quiet(False)
    again = ikedlab_for(lab.name)
    print(f"exercise {exercise.name}: {exercise.title}  (lab '{lab.name}' ready in {seconds:.1f} s)\n")
    print(_paragraph(exercise.told))
    print(
        f"\nFind out why with the guide's commands (`{again} console HOST`), repair it, then "
        f"`{again} exercise check`.\nStuck? `{again} exercise hint`. Practises docs/walkthrough.md, "
        f"{exercise.practises}."
    )
    return 0


def cmd_check(lab: Lab, args: argparse.Namespace) -> int:
    from lab.exercises.session import current, judge, needed_hosts

    _, exercise = current(lab)
    hosts = lab.attach(only=needed_hosts(lab, exercise))
    verdict = judge(lab, exercise, hosts)
    print(verdict_lines(verdict, exercise, ikedlab_for(lab.name), args.debug))
    return 0 if verdict.repaired else EXIT_NOT_REPAIRED


def verdict_lines(verdict: Verdict, exercise: Exercise, again: str, debug: bool = False) -> str:
    """What `check` says: repaired, or what is still wrong in at most SHOWN_WRONG lines."""
    total = len(exercise.checks)
    if verdict.repaired:
        return f"repaired: all {total} checks hold. `{again} exercise stop` puts the lab back as it was."
    wrong = [f.check.wrong for f in verdict.failed]
    if len(wrong) > SHOWN_WRONG:
        wrong = [*wrong[: SHOWN_WRONG - 1], f"{wrong[SHOWN_WRONG - 1]} (and {len(wrong) - SHOWN_WRONG} more)"]
    lines = [f"not yet: {wrong[0]}", *(f"         {w}" for w in wrong[1:])]
    if debug:
        lines += [f"  ({f.detail})" for f in verdict.failed]
    return "\n".join(lines)


def cmd_hint(lab: Lab, args: argparse.Namespace) -> int:
    from lab.exercises.session import hint

    number, exercise = hint(lab)
    print(f"hint {number} of {len(exercise.hints)}:")
    print(_paragraph(exercise.hints[number - 1]))
    if number == len(exercise.hints):
        print(f"(the last one; `{ikedlab_for(lab.name)} exercise solution` shows the fix)")
    return 0


def cmd_solution(lab: Lab, args: argparse.Namespace) -> int:
    from lab.exercises.session import solution

    exercise = solution(lab)
    found = exercise.found_with
    print(f"exercise {exercise.name}, the fault and its fix:")
    print(_paragraph(exercise.fix))
    print(f"\nWhat finds it: on {found.on}, `{found.command}` shows")
    print(f"  {found.shows}")
    return 0


def cmd_stop(lab: Lab, args: argparse.Namespace) -> int:
    import time

    from lab.exercises.session import stop

    progress.set_quiet(not args.debug)
    started = time.monotonic()
    try:
        exercise = stop(lab)
    finally:
        progress.set_quiet(False)
    what = f"exercise {exercise.name} stopped" if exercise else "no exercise ran"
    print(f"{what}: lab '{lab.name}' is back as `up` made it ({time.monotonic() - started:.1f} s)")
    return 0
