"""The trend over runs: a folder of results files (lab/results.py, one per run) read as one page that shows,
per case, its verdict in every run, the first run it failed, how often it fails and how often its verdict
flips, and what the last run means for it: a new failure, still failing, fixed, flaky or passing.

A failure is `failed` or `error`; `skipped` is no verdict (the case did not run); `xfailed` is as expected.
The flip rate is the share of consecutive runs (of those where the case ran) whose verdicts differ between
pass and fail: 0 for a case that always passes or always fails, 1 for one that alternates.
`ikedlab report --trend FOLDER -o DIR` writes DIR/trend.html.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lab import report
from lab.errors import IkedlabError
from lab.results import FAILED, Run, load_history

TREND = "trend.html"
#: Statuses, most urgent first: the page lists cases in this order.
STATUSES = ("new failure", "failing", "flaky", "fixed", "not run", "passing")
FLAKY_FLIPS = 2  # fail-pass-fail (or pass-fail-pass) over the runs kept: not a clean break either way


@dataclass(frozen=True)
class CaseTrend:
    suite: str
    cell: str
    case: str
    verdicts: tuple[str | None, ...]  # one per run, oldest first; None where the case was not in the run
    status: str
    first_failed: int | None  # index of the first run it failed in
    failing_since: int | None  # where the current run of failures began (when the last run failed)
    failures: int
    ran: int  # runs with a pass or fail verdict
    flips: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.ran if self.ran else 0.0

    @property
    def flip_rate(self) -> float:
        return self.flips / (self.ran - 1) if self.ran > 1 else 0.0


def judged(verdict: str | None) -> bool | None:
    """True for a failure, False for a pass (xfailed included), None where it says nothing (absent, skip)."""
    if verdict is None or verdict == "skipped":
        return None
    return verdict in FAILED


def case_trend(suite: str, cell: str, case: str, verdicts: tuple[str | None, ...]) -> CaseTrend:
    judgements = [(i, judged(v)) for i, v in enumerate(verdicts)]
    ran = [(i, failed) for i, failed in judgements if failed is not None]
    failures = [i for i, failed in ran if failed]
    flips = sum(1 for (_, a), (_, b) in zip(ran, ran[1:], strict=False) if a != b)
    last = judged(verdicts[-1]) if verdicts else None
    failing_since = None
    if last:
        failing_since = len(verdicts) - 1
        for i, failed in reversed(ran[:-1]):
            if not failed:
                break
            failing_since = i
    earlier = ran[:-1] if last is not None else ran
    if last is None:
        status = "not run"
    elif last:
        if not any(failed for _, failed in earlier):
            status = "new failure"
        elif earlier and earlier[-1][1]:
            status = "failing"
        else:
            status = "flaky"  # failed before, passed since, fails again
    elif earlier and earlier[-1][1]:
        status = "fixed"
    elif flips >= FLAKY_FLIPS:
        status = "flaky"
    else:
        status = "passing"
    return CaseTrend(
        suite, cell, case, verdicts, status, failures[0] if failures else None, failing_since, len(failures),
        len(ran), flips,
    )  # fmt: skip


def trends(runs: list[Run]) -> list[CaseTrend]:
    """Every case of any run, most urgent first (then by suite, cell, case)."""
    table: dict[tuple[str, str, str], list[str | None]] = {}
    for index, run in enumerate(runs):
        for row in run.rows:
            table.setdefault(row.key, [None] * len(runs))[index] = row.verdict
    found = [case_trend(*key, tuple(verdicts)) for key, verdicts in table.items()]
    return sorted(found, key=lambda t: (STATUSES.index(t.status), t.suite, t.cell, t.case))


def write_trend(history: Path, out: Path) -> Path:
    """DIR/trend.html over every results file under `history`."""
    runs = load_history(history)
    if not runs:
        raise IkedlabError(
            f"{history}: no results files", hint="each run's `make report` writes results.json"
        )
    found = trends(runs)
    counts = {status: sum(t.status == status for t in found) for status in STATUSES}
    page = (
        report.environment()
        .get_template("trend.html.j2")
        .render(
            runs=runs,
            trends=found,
            counts=counts,
            generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
    )
    path = out / TREND
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
