"""Shards: a run cut into n disjoint parts that together are exactly the whole run, one per machine (a CI
runner, a colleague's box), merged afterwards by `ikedlab report --merge` (lab/merge.py).

What is dealt out is a group, never a single test: a module of tests (its scenarios share a lab and may
build on each other, like the walkthrough's steps), a test's `xdist_group` where it names one, a cell of the
interop matrix (one lab). Groups go longest first onto the least loaded shard, ties to the lower shard; a
group weighs what it took in the newest earlier run that had it (lab/results.py: results files or JUnit
files), a case nobody has timed the median known case, and 1 s each when nothing is known (a whole
nightly's plan, lab/nightly.py, weighs an untimed group by its suite's typical one instead). So the same
inputs give the same plan on every machine, and every shard records the plan's fingerprint beside what it
ran: the merge sees shards that planned from different inputs.

lab/shard_plugin.py gives every pytest run of the project --shard I/N, --shard-durations PATH and
--shard-plan FILE; lab/interop.py deals its cells with the same `plan`.
`python -m lab.nightly plan` makes one plan for a whole nightly (every suite's groups), which each suite of
`make nightly SHARD=i/n` then follows.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import IkedlabError
from lab.results import Durations, load_history, now

PLAN_FORMAT = "ikedlab-shard-plan/1"
RECORD_FORMAT = "ikedlab-shard/1"
RECORD_SUFFIX = ".shard.json"


class ShardError(IkedlabError):
    """A shard spec, plan or record that cannot be used."""


@dataclass(frozen=True, order=True)
class Shard:
    index: int  # 1-based, as people count shards
    count: int

    @classmethod
    def parse(cls, text: str, source: str = "--shard") -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ShardError(
                f"{source}={text!r}: expected I/N with 1 <= I <= N",
                hint="e.g. SHARD=1/2 on one machine, 2/2 on the other",
            )
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str:
        """For file and lab names: 1-of-2."""
        return f"{self.index}-of-{self.count}"


@dataclass(frozen=True)
class Plan:
    """Which shard runs each group, and the seconds each group was expected to take."""

    count: int
    assignment: dict[str, int]  # group -> shard index
    seconds: dict[str, float]  # group -> expected seconds
    estimated: frozenset[str] = frozenset()  # groups weighed without a measured time

    def groups(self, index: int) -> list[str]:
        return sorted(g for g, i in self.assignment.items() if i == index)

    def loads(self) -> list[float]:
        return [round(sum(self.seconds[g] for g in self.groups(i)), 1) for i in range(1, self.count + 1)]

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.count, sorted(self.assignment.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, object]:
        return {
            "format": PLAN_FORMAT,
            "count": self.count,
            "fingerprint": self.fingerprint,
            "groups": {
                g: {"shard": i, "seconds": round(self.seconds[g], 1), "estimated": g in self.estimated}
                for g, i in sorted(self.assignment.items())
            },
        }

    @classmethod
    def from_dict(cls, data: object, source: str) -> Plan:
        try:
            assert isinstance(data, dict) and data["format"] in (PLAN_FORMAT, RECORD_FORMAT)
            groups = data["groups"]
            plan = cls(
                int(data["count"]),
                {str(g): int(v["shard"]) for g, v in groups.items()},
                {str(g): float(v["seconds"]) for g, v in groups.items()},
                frozenset(str(g) for g, v in groups.items() if v.get("estimated")),
            )
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError):
            raise ShardError(f"{source}: not a shard plan ({PLAN_FORMAT})") from None
        if bad := [g for g, i in plan.assignment.items() if not 1 <= i <= plan.count]:
            raise ShardError(f"{source}: groups.{bad[0]}.shard: not between 1 and {plan.count}")
        return plan

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"{path}: unreadable shard plan ({e})") from None
        return cls.from_dict(data.get("plan", data) if isinstance(data, dict) else data, str(path))


def add_options(add: Callable[..., object], unit: str) -> None:
    """--shard, --shard-durations and --shard-plan, one definition for every command that deals a run:
    `add` is argparse's `parser.add_argument` or pytest's `group.addoption` (the same signature); `unit` is
    what the run deals (whole modules, cells, a case on a cell)."""
    add("--shard", metavar="I/N", default=None, help=f"run the I-th of N parts ({unit})")
    add(
        "--shard-durations",
        metavar="PATH",
        default=None,
        help="earlier runs' results or JUnit files (a file or a folder): what each part weighs",
    )
    add("--shard-plan", metavar="FILE", default=None, help="a whole run's plan (python -m lab.nightly plan)")


def plan(
    groups: Mapping[str, Sequence[str]],
    count: int,
    durations: Durations | None = None,
    prior: Callable[[str], float] | None = None,
) -> Plan:
    """Deal `groups` (name -> its cases, empty when not known beforehand) onto `count` shards: longest
    first onto the least loaded shard (ties: the lower shard, then the group's name). A group no earlier run
    timed weighs `prior(group)` when given (a whole run's plan knows its suites' typical groups), else the
    median known case per case."""
    durations = durations or Durations()
    seconds: dict[str, float] = {}
    estimated = set()
    median = durations.median_case()
    for group, cases in groups.items():
        known = [durations.cases[(group, c)] for c in cases if (group, c) in durations.cases]
        if cases and known:
            seconds[group] = sum(known) + median * (len(cases) - len(known))
            if len(known) < len(cases):
                estimated.add(group)
        elif group in durations.groups:
            seconds[group] = durations.groups[group]
        else:
            seconds[group] = prior(group) if prior else median * max(len(cases), 1)
            estimated.add(group)
    loads = [0.0] * count
    assignment = {}
    for group in sorted(groups, key=lambda g: (-seconds[g], g)):
        index = min(range(count), key=lambda i: (loads[i], i))
        assignment[group] = index + 1
        loads[index] += seconds[group]
    return Plan(count, assignment, seconds, frozenset(estimated))


def durations(path: str | Path | None) -> Durations:
    """Durations from earlier runs (results files, JUnit files, or a folder of them); none without a path."""
    if not path:
        return Durations()
    return Durations.of_runs(load_history(Path(path)))


@dataclass
class Record:
    """What one shard of one suite was dealt and how it ended: the merge reads it beside the suite's JUnit."""

    suite: str
    shard: Shard
    plan: Plan
    selected: dict[str, list[str]] = field(default_factory=dict)  # group -> case ids it ran
    started: str = field(default_factory=now)
    finished: str = ""
    exit: int | None = None  # None: the shard never finished (killed, or still running)
    host: str = field(default_factory=socket.gethostname)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": RECORD_FORMAT,
            "suite": self.suite,
            "shard": str(self.shard),
            "host": self.host,
            "started": self.started,
            "finished": self.finished,
            "exit": self.exit,
            "plan": self.plan.to_dict(),
            "selected": self.selected,
        }
        path.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            data = json.loads(path.read_text())
            assert isinstance(data, dict) and data.get("format") == RECORD_FORMAT
            record = cls(
                str(data["suite"]),
                Shard.parse(str(data["shard"]), f"{path}: shard"),
                Plan.from_dict(data["plan"], f"{path}: plan"),
                {str(g): [str(c) for c in cs] for g, cs in (data.get("selected") or {}).items()},
                str(data.get("started", "")),
                str(data.get("finished", "")),
                None if data.get("exit") is None else int(data["exit"]),
                str(data.get("host", "")),
            )
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
            raise ShardError(f"{path}: not a shard record ({RECORD_FORMAT}): {e}") from None
        if record.shard.count != record.plan.count:
            raise ShardError(f"{path}: shard {record.shard} under a plan of {record.plan.count} shards")
        return record


def choose(
    groups: Mapping[str, Sequence[str]],
    shard: Shard,
    plan_file: str | Path | None,
    history: str | Path | None,
) -> Plan:
    """This suite's plan: the whole run's plan from a file, or one made here over its own groups."""
    if not plan_file:
        return plan(groups, shard.count, durations(history))
    whole = Plan.load(Path(plan_file))
    if whole.count != shard.count:
        raise ShardError(f"{plan_file}: a plan for {whole.count} shards, not for shard {shard}")
    if missing := sorted(set(groups) - set(whole.assignment)):
        raise ShardError(
            f"{plan_file}: no shard for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            hint="the plan was made for another checkout: make it again (python -m lab.nightly plan)",
        )
    return whole
