"""The `ikedlab report` command: a run's HTML report and results file, the shards of one run merged into one
(`--merge`), the trend over runs (`--trend`, `--history`). Thin, like lab/cli.py: the work is in lab.report,
lab.merge, lab.results and lab.trend (docs/nightly.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lab.errors import IkedlabError

EXIT_FAILED = 1


def add_commands(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="a run's HTML report and results file; --merge joins shards, --trend shows runs over time",
    )
    report.add_argument(
        "artifacts",
        nargs="?",
        type=Path,
        default=Path("artifacts"),
        help="a run's artifacts (default: artifacts)",
    )
    report.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="the shards' artifacts folders: one report of them",
    )
    report.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="where the merged report or trend goes"
    )
    report.add_argument(
        "--trend", type=Path, metavar="HISTORY", help="a folder of runs' results files: trend.html"
    )
    report.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="keep this run's results file in DIR and write DIR's trend beside the report",
    )
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Exit 0 when the run (every shard of it) passed, 1 when anything failed or did not run."""
    from lab import merge, report, results, trend

    if args.trend and not args.merge:
        print(trend.write_trend(args.trend, args.output or args.trend))
        return 0
    if args.merge:
        if not args.output:
            raise IkedlabError(
                "report --merge: -o DIR is required", hint="ikedlab report --merge A B -o merged"
            )
        merged = merge.merge(args.merge, args.output)
        for shard in merged.shards:
            note = f" ({shard.note})" if shard.note else ""
            print(f"shard {shard.label}: {shard.status}, {shard.cases} tests{note}")
        for problem in merged.problems:
            print(f"problem: {problem}")
        page, out, ok = merged.report, args.output, merged.ok
    else:
        page, out = report.write_report(args.artifacts), args.artifacts
        ok = not any(r.verdict in results.FAILED for r in results.load(out / results.RESULTS_FILE).rows)
    print(page)
    if args.history:
        print(results.keep(out / results.RESULTS_FILE, args.history))
        print(trend.write_trend(args.history, out))
    return 0 if ok else EXIT_FAILED
