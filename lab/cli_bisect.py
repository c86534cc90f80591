"""`ikedlab bisect`: the first commit of an iked tree that breaks a case (lab/bisect.py does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lab.errors import IkedlabError


def add_commands(sub: Any) -> None:
    b = sub.add_parser(
        "bisect",
        help="find the first commit of an iked source tree that breaks a case (git bisect, one lab per step)",
    )
    b.set_defaults(handler=cmd_bisect)
    b.add_argument(
        "--source",
        dest="tree",
        type=Path,
        required=True,
        help="an OpenIKED portable tree with its git history",
    )
    b.add_argument("--good", help="a revision where the case passes")
    b.add_argument("--bad", help="a revision where it fails (default HEAD)", default="HEAD")
    what = b.add_mutually_exclusive_group(required=True)
    what.add_argument("--case", help="a catalogue case's name (scenarios/cases/NAME)")
    what.add_argument("--test", help="a scenario test id, e.g. scenarios/test_11_reconfigure.py::test_x")
    what.add_argument(
        "--run", metavar="COMMAND", help="a host command: exit 0 good, 125 cannot test, else bad"
    )
    b.add_argument("--hosts", help="the gateways that run the build, comma-separated (default: every one)")
    b.add_argument("--out", type=Path, help="each step's evidence (default: RUN_DIR/bisect)")
    b.add_argument(
        "--step",
        action="store_true",
        help="test the tree as it is, once, and exit 0 (good), 1 (bad) or 125: for `git bisect run`",
    )


def cmd_bisect(args: argparse.Namespace) -> int:
    from lab import bisect, private, progress

    case = bisect.Case(catalogue=args.case, test=args.test, command=args.run)
    hosts = [h for h in (args.hosts or "").split(",") if h] or None
    out = args.out or private.labs_dir() / args.name / "bisect"
    tester = bisect.lab_tester(args.name, case, hosts)
    source = args.tree.expanduser().resolve()
    if args.step:
        commit = bisect.git(source, "rev-parse", "HEAD", check=False).strip() or "the tree as it is"
        folder = out / f"step-{commit[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        verdict, why = tester(source, commit, folder)
        progress.say(f"{commit[:12]}: {verdict.word}: {why} (evidence: {folder})")
        return int(verdict)
    if not args.good:
        raise IkedlabError("bisect: --good REV is needed (or --step, under `git bisect run`)")
    progress.say(
        f"bisect {source} from {args.good} (good) to {args.bad} (bad): {case.describe()} on lab '{args.name}'"
    )
    result = bisect.walk(source, args.good, args.bad, tester, out, progress.say)
    bisect.report(result)
    return 0 if result.first_bad else 1
