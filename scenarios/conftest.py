"""Scenarios: the guide's checks against a live lab.

One lab per pytest process (per xdist worker, named after it, so `pytest -n 2 scenarios` runs two labs side
by side). Every scenario gets an evidence folder under --artifacts with the console transcripts, iked logs,
captures and rendered configs; a failing scenario's report names that folder and the last lines of iked's log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import interrupts, ownership, settings
from lab.blueprint import UpRequest
from lab.bundle import describe
from lab.errors import IkedlabError
from lab.evidence import PROBLEM as EVIDENCE_PROBLEM
from lab.lab import Lab
from lab.platforms import get_platform, platform_names
from lab.prune import prune
from lab.results import LAB_UP_PROPERTY
from lab.shard_plugin import shard_of


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ikedlab")
    group.addoption(
        "--platform",
        default=settings.platform(settings.SCENARIO_PLATFORM),
        help=f"guest platform of the scenario lab: one of {', '.join(platform_names())} "
        f"(default: $IKEDLAB_PLATFORM or {settings.SCENARIO_PLATFORM})",
    )
    group.addoption("--keep-lab", action="store_true", help="keep the lab running when a scenario failed")
    group.addoption("--artifacts", default="artifacts/scenarios", help="where evidence folders go")
    group.addoption("--topology", default=None, help="a topology file (default: the guide's lab)")
    group.addoption(
        "--release",
        default=None,
        help="the release of platforms with golden images (OpenBSD: 7.9, or snapshots for -current; "
        "default: the newest release cached)",
    )
    group.addoption(
        "--known-failures",
        default=None,
        help="a JSON list of {test, reason, reference}: known interop failures, run as strict xfails",
    )
    group.addoption(
        "--reverse", action="store_true", help="run the scenarios in reverse order (isolation check)"
    )
    group.addoption(
        "--lab-name",
        default=None,
        help="the scenario lab's name (default: scn- and six hex digits of the checkout), plus the worker",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--reverse runs the scenarios backwards; known interop failures (lab/interop.yaml, per cell) become
    strict xfails naming their reference."""
    if config.getoption("--reverse"):
        items.reverse()
    path = config.getoption("--known-failures")
    if not path:
        return
    for known in json.loads(Path(path).read_text()):
        for item in items:
            if known["test"] in (item.name, "*"):  # "*": the whole cell (its lab does not come up)
                reason = f"{known['reason']} ({known['reference']})"
                # A whole cell xfails only through the lab fixture's pytest.xfail, which it calls when the
                # lab's error matches the entry's lab_error: any other failure stays a failure.
                raises = pytest.xfail.Exception if known["test"] == "*" else None
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))


def _known_cell_failure(config: pytest.Config, why: str) -> str:
    """The reason of a known failure of the whole interop cell ("*") whose `lab_error` matches `why` (the
    lab's error), or "": a cell known not to come up for one reason still fails for any other."""
    path = config.getoption("--known-failures")
    known = json.loads(Path(path).read_text()) if path else []
    return next(
        (
            f"{k['reason']} ({k['reference']})"
            for k in known
            if k["test"] == "*" and re.search(k.get("lab_error", "$^"), why)
        ),
        "",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"ikedlab: platform {config.getoption('--platform')}, evidence in {config.getoption('--artifacts')}"
    )


def _lab_name(config: pytest.Config) -> str:
    """Unique to this checkout, shard and xdist worker: two checkouts' suites, or two shards of one, on one
    machine never share a lab."""
    name = config.getoption("--lab-name") or f"scn-{ownership.checkout_tag()}"
    shard = shard_of(config)
    if shard is not None:
        name += f"-s{shard.index}"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{name}-{worker}" if worker else name


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, record_testsuite_property) -> Iterator[Lab]:  # noqa: ANN001
    """The session's lab. Ctrl-C anywhere in the session says "stopping, cleaning up…" at once, skips
    putting a changed lab back (`Lab.reconfigured`) and takes the lab down; a second Ctrl-C cannot cut
    that short."""
    with interrupts.guarded() as guard:
        yield from _session_lab(request, record_testsuite_property, guard)


def _session_lab(
    request: pytest.FixtureRequest,
    record_testsuite_property,  # noqa: ANN001
    guard: interrupts.Guard,
) -> Iterator[Lab]:
    config = request.config
    platform = config.getoption("--platform")
    record_testsuite_property("platform", platform)  # nightly runs: the JUnit report says what was tested
    try:
        release = config.getoption("--release")
        if not get_platform(platform).media_available(release):
            pinned = f" --release {release}" if release else ""
            pytest.skip(
                f"no {platform}{' ' + release if release else ''} image in the cache: build one with "
                f"`ikedlab image build --platform {platform}{pinned}` (OpenBSD: --iso PATH, the install ISO "
                "and its SHA256.sig), or run with --platform linux"
            )
    except IkedlabError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        prune(scenario_labs_only=True)  # scenario labs of deleted checkouts: nothing would use them again
    except IkedlabError as e:
        print(f"ikedlab: scenario labs of deleted checkouts not pruned: {e}")
    lab = Lab(_lab_name(config))
    try:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        # Ours for the session: a live run of this checkout is refused, another checkout's lab untouched.
        lab.claim(
            command=f"pytest scenarios{' (' + worker + ')' if worker else ''}", only_this_checkouts=True
        )
        lab.down(quiet=True)  # a lab of the same name left by a dead run of this checkout
        topology = Path(config.getoption("--topology")) if config.getoption("--topology") else None
        started = time.monotonic()
        lab.up(UpRequest(topology=topology, platform=platform, release=config.getoption("--release")))
        # pytest charges this to the first scenario's time: lab/results.py takes it off again, so a module's
        # weight in a shard plan is its own, not the lab's (which every shard pays anyway).
        record_testsuite_property(LAB_UP_PROPERTY, f"{time.monotonic() - started:.1f}")
    except IkedlabError as e:
        lab.close()
        why = f"the lab did not come up: {e}" + (f" ({e.hint})" if e.hint else "")
        if whole_cell := _known_cell_failure(config, why):  # a known interop failure: xfail (see the marker)
            pytest.xfail(f"{why}; known: {whole_cell}")
        pytest.fail(why, pytrace=False)
    _describe_for_the_report(lab, Path(config.getoption("--artifacts")))
    yield lab
    if config.getoption("--keep-lab") and request.session.testsfailed and not guard.interrupted:
        lab.close()
        print(
            f"\nikedlab: lab '{lab.name}' kept for you. Attach a console: "
            f"ikedlab --name {lab.name} console init   (leave with Ctrl-]);"
            f" remove it: ikedlab --name {lab.name} down"
        )
        return
    guard.shield()  # the lab goes, whatever Ctrl-C comes now
    lab.down(quiet=True)
    lab.close()


def _describe_for_the_report(lab: Lab, artifacts: Path) -> None:
    """lab.json beside the evidence folders: versions and topology for the HTML report (lab/report.py)."""
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "lab.json").write_text(json.dumps(describe(lab), indent=2))
    except IkedlabError as e:
        print(f"ikedlab: versions for the report could not be read: {e}")


@pytest.fixture(autouse=True)
def evidence(request: pytest.FixtureRequest, lab: Lab) -> Path:
    """This scenario's evidence folder; captures taken during the scenario land there."""
    folder = Path(request.config.getoption("--artifacts")) / request.node.name.replace("/", "_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for host in lab.hosts.values():
        host.artifacts = folder
    request.node.stash[_EVIDENCE] = (lab, folder)
    return folder


_EVIDENCE = pytest.StashKey[tuple[Lab, Path]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or _EVIDENCE not in item.stash:
        return
    lab, folder = item.stash[_EVIDENCE]
    tails = _collect_evidence(lab, folder)
    if report.failed:
        text = f"evidence: {folder}\n" + "".join(
            f"--- last lines of iked's log on {host} ---\n{tail}\n" for host, tail in tails.items()
        )
        report.sections.append(("ikedlab evidence", text))
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("ikedlab evidence", text)


def _collect_evidence(lab: Lab, folder: Path) -> dict[str, str]:
    """The lab's evidence (transcripts, configs, each gateway's iked log and SAs) in the scenario's folder;
    each gateway's last lines of iked's log."""
    try:
        return lab.save_evidence(folder)
    except (IkedlabError, OSError) as e:
        return {EVIDENCE_PROBLEM: f"could not collect everything: {e}"}
