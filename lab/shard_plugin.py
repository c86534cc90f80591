"""pytest's side of lab/shard.py: --shard I/N (with --shard-durations, --shard-plan, --shard-record) for
every pytest run of the project (pyproject's addopts load this plugin). A shard keeps the tests of the groups
the plan deals it, deselects the rest, and records beside its JUnit file what it was dealt and how it ended.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import IkedlabError
from lab.results import now
from lab.shard import RECORD_SUFFIX, Record, Shard, ShardError, add_options, choose

#: pytest exits 5 when it ran nothing: a shard that was dealt no group of a suite ran all it had to.
NOTHING_COLLECTED = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shard", "shards: one of N disjoint parts of the run (lab/shard.py)")
    add_options(group.addoption, "whole modules")
    group.addoption(
        "--shard-record",
        metavar="FILE",
        default=None,
        help=f"where this shard says what it ran (default: beside --junitxml, NAME{RECORD_SUFFIX})",
    )


_RECORD = pytest.StashKey[tuple[Record, Path | None]]()


def item_group(item: pytest.Item) -> str:
    """The module, or the test's xdist_group: what must stay in one shard (and one lab)."""
    marker = item.get_closest_marker("xdist_group")
    if marker is not None:
        name = marker.args[0] if marker.args else marker.kwargs.get("name")
        if name:  # beside the modules of its folder: scenarios/NAME
            folder = item.nodeid.split("::", 1)[0].rpartition("/")[0].split("/", 1)[0]
            return f"{folder}/{name}" if folder else str(name)
    return item.nodeid.split("::", 1)[0]


def shard_of(config: pytest.Config) -> Shard | None:
    text = config.getoption("--shard", None)
    if not text:
        return None
    try:
        return Shard.parse(text)
    except ShardError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: a shard is dealt what the run would run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = shard_of(config)
    if shard is None:
        return
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(item_group(item), []).append(item.nodeid)
    try:
        chosen = choose(
            groups, shard, config.getoption("--shard-plan"), config.getoption("--shard-durations")
        )
    except IkedlabError as e:
        raise pytest.UsageError(str(e) + (f" (hint: {e.hint})" if e.hint else "")) from None
    keep = [i for i in items if chosen.assignment[item_group(i)] == shard.index]
    dropped = [i for i in items if chosen.assignment[item_group(i)] != shard.index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
    record = Record(_suite(config), shard, chosen)
    record.selected = {
        g: [c for c in cases] for g, cases in groups.items() if chosen.assignment[g] == shard.index
    }
    path = _record_path(config)
    if path is not None:
        record.write(path)  # written now, finished later: a shard killed midway shows as never finished
    config.stash[_RECORD] = (record, path)


def pytest_report_header(config: pytest.Config) -> str | None:
    shard = shard_of(config)
    if shard is None:
        return None
    return f"shard {shard}, durations from {config.getoption('--shard-durations') or 'nowhere (1 s a test)'}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _RECORD not in session.config.stash:
        return
    record, path = session.config.stash[_RECORD]
    if exitstatus == NOTHING_COLLECTED and not record.selected:  # dealt nothing: done, not broken
        session.exitstatus = exitstatus = 0
    record.finished, record.exit = now(), int(exitstatus)
    if path is not None:
        record.write(path)


def _suite(config: pytest.Config) -> str:
    junit = config.getoption("--junitxml", None) or config.getoption("xmlpath", None)
    if junit:
        return Path(junit).stem.removeprefix("junit-")
    args = [a for a in config.args if not a.startswith("-")]
    return Path(args[0]).parts[0] if args else "pytest"


def _record_path(config: pytest.Config) -> Path | None:
    explicit = config.getoption("--shard-record")
    if explicit:
        return Path(explicit)
    junit = config.getoption("xmlpath", None)
    return Path(junit).with_suffix(RECORD_SUFFIX) if junit else None
