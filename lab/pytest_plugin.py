"""ikedlab's pytest plugin (entry point `pytest11`): a running lab for any repository's tests.

Installed with ikedlab, it gives every pytest run the options `--platform`, `--lab-name`, `--topology`,
`--release`, `--keep-lab`, `--artifacts`, the session fixture `lab` (one lab per pytest process: per xdist
worker, named after it, so `pytest -n 2` runs two labs side by side) and the fixture `evidence`: a test's own
folder under --artifacts that receives the console transcripts, iked logs, SAs, captures and rendered configs
after the test; a failing test's report names it and shows the last lines of iked's log. docs/installing.md
has an example; ikedlab's own scenarios/ use it.

Nothing here boots a lab unless a test asks for `lab`: the fast tests of a repository that has ikedlab
installed pay only for the options.

Every run's files are its user's alone (umask 077), and its reports pass the redactor before the terminal and
JUnit see them: an assertion may quote a guest's output (`ip xfrm state` holds SA keys), and JUnit files are
published (lab/redact.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lab import leakcheck, private, redact, settings

if TYPE_CHECKING:
    from lab.lab import Lab


def pytest_addoption(parser: pytest.Parser) -> None:
    from lab.platforms import platform_names

    group = parser.getgroup("ikedlab")
    group.addoption(
        "--platform",
        default=settings.platform(settings.SCENARIO_PLATFORM),
        help=f"guest platform of the test lab: one of {', '.join(platform_names())} "
        f"(default: $IKEDLAB_PLATFORM or {settings.SCENARIO_PLATFORM})",
    )
    group.addoption(
        "--lab-name",
        default=None,
        help="the test lab's name (default: scn- and six hex digits of the checkout), plus the xdist worker",
    )
    group.addoption("--topology", default=None, help="a topology file (default: the guide's lab)")
    group.addoption(
        "--release",
        default=None,
        help="the release of platforms with golden images (OpenBSD: 7.9, or snapshots for -current; "
        "default: the newest release cached)",
    )
    group.addoption(
        "--iked-source",
        default=None,
        metavar="DIR",
        help="an OpenIKED portable source tree: every gateway runs a build of it (as `up --iked-source DIR`)",
    )
    group.addoption("--keep-lab", action="store_true", help="keep the lab running when a test failed")
    group.addoption("--artifacts", default="artifacts/scenarios", help="where evidence folders go")


def pytest_configure(config: pytest.Config) -> None:
    private.restrict_umask()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.longrepr is not None:
        text = str(report.longrepr)
        if (clean := redact.scrub(text)) != text:
            report.longrepr = clean
    report.sections = [(title, redact.scrub(content)) for title, content in report.sections]


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"ikedlab: platform {config.getoption('--platform')}, evidence in {config.getoption('--artifacts')}"
    )


def lab_name(config: pytest.Config) -> str:
    """Unique to this checkout, shard and xdist worker: two checkouts' suites, or two shards of one, on one
    machine never share a lab. For another repository's suite the checkout is that repository (ikedlab's own
    place is a venv's)."""
    from lab import ownership
    from lab.shard_plugin import shard_of

    root = str(config.rootpath)
    checkout = ownership.CHECKOUT if root == ownership.CHECKOUT else root
    name = config.getoption("--lab-name") or f"scn-{ownership.checkout_tag(checkout)}"
    shard = shard_of(config)  # --shard I/N (lab/shard_plugin.py, where it is loaded)
    if shard is not None:
        name += f"-s{shard.index}"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{name}-{worker}" if worker else name


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, record_testsuite_property: Any) -> Iterator[Lab]:
    """The session's lab, up with its tunnel established (see `session_lab`)."""
    yield from session_lab(request, record_testsuite_property)


def session_lab(
    request: pytest.FixtureRequest,
    record_testsuite_property: Any,
    did_not_come_up: Callable[[str], object] | None = None,
) -> Iterator[Lab]:
    """The lab of a test session: claimed for the session, brought up (restored from its warm snapshot when
    one matches), described for the report, and taken down at the end unless --keep-lab and a test failed.
    `did_not_come_up(why)` is called before the session fails when the lab does not come up (it may xfail).

    Ctrl-C anywhere in the session says "stopping, cleaning up…" at once, skips putting a changed lab back
    (`Lab.reconfigured`) and takes the lab down; a second Ctrl-C cannot cut that short. A conftest that
    overrides `lab` yields from this."""
    from lab import interrupts

    with interrupts.guarded() as guard:
        yield from _session_lab(request, record_testsuite_property, guard, did_not_come_up)


def _session_lab(
    request: pytest.FixtureRequest,
    record_testsuite_property: Any,
    guard: Any,
    did_not_come_up: Callable[[str], object] | None,
) -> Iterator[Lab]:
    from lab.blueprint import UpRequest
    from lab.errors import IkedlabError
    from lab.lab import Lab
    from lab.platforms import get_platform
    from lab.prune import prune
    from lab.results import LAB_UP_PROPERTY

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
    if hosts := settings.hosts_file():  # -n N over several libvirt hosts: this worker's lab on its own
        from lab.libvirt_hosts import for_worker, load_hosts

        try:
            uri = for_worker(load_hosts(hosts), os.environ.get("PYTEST_XDIST_WORKER", ""))
        except IkedlabError as e:
            pytest.fail(f"IKEDLAB_HOSTS: {e}", pytrace=False)
        os.environ["IKEDLAB_LIBVIRT_URI"] = uri
        record_testsuite_property("libvirt", uri.split("?", 1)[0])  # the report says where (not the key)
    lab = Lab(lab_name(config))
    try:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        # Ours for the session: a live run of this checkout is refused, another checkout's lab untouched.
        lab.claim(command=f"pytest{' (' + worker + ')' if worker else ''}", only_this_checkouts=True)
        lab.down(quiet=True)  # a lab of the same name left by a dead run of this checkout
        topology = Path(config.getoption("--topology")) if config.getoption("--topology") else None
        # From the booted base (provisioning code changed), the provisioned lab is saved too: every scenario
        # that changes the lab is put back from it.
        up = lab.up(
            UpRequest(
                topology=topology,
                platform=platform,
                release=config.getoption("--release"),
                iked=_iked_source(config, topology),
                save_after_base=True,
            )
        )
        # pytest charges this to the first test's time: lab/results.py takes it off again, so a module's
        # weight in a shard plan is its own, not the lab's (which every shard pays anyway).
        record_testsuite_property(LAB_UP_PROPERTY, f"{up.seconds:.1f}")
    except IkedlabError as e:
        lab.close()
        why = f"the lab did not come up: {e}" + (f" ({e.hint})" if e.hint else "")
        if did_not_come_up:
            did_not_come_up(why)
        pytest.fail(why, pytrace=False)
    _describe_for_the_report(lab, Path(config.getoption("--artifacts")))
    seen = config.stash[_SEEN] = leakcheck.Seen(keys=redact.witness(), labs={lab.name})
    yield lab
    if not guard.interrupted:
        _record_keys(lab, seen)
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


def _iked_source(config: pytest.Config, topology: Path | None) -> dict[str, Any]:
    """--iked-source: every gateway of the topology runs a build of that tree."""
    from lab.placement import load_topology
    from lab.platforms import DaemonChoice

    source = config.getoption("--iked-source")
    if not source:
        return {}
    return {g.name: DaemonChoice(source=Path(source)) for g in load_topology(topology).gateways}


def _record_keys(lab: Lab, seen: leakcheck.Seen) -> None:
    """The keys the gateways' kernels hold at the end, with those seen after each test, for `make test`'s
    leak check (lab/leakcheck.py)."""
    from lab.errors import IkedlabError

    try:
        for gateway in lab.gateways():
            seen.keys.update(redact.found(gateway.run(gateway.platform.kernel_ipsec_command()).output))
    except (IkedlabError, AssertionError) as e:
        print(f"ikedlab: the kernels' last keys could not be read for the leak check: {e}")
    leakcheck.record(seen)


def _describe_for_the_report(lab: Lab, artifacts: Path) -> None:
    """lab.json beside the evidence folders: versions and topology for the HTML report (lab/report.py)."""
    from lab.bundle import describe
    from lab.errors import IkedlabError

    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / "lab.json").write_text(json.dumps(describe(lab), indent=2))
    except IkedlabError as e:
        print(f"ikedlab: versions for the report could not be read: {e}")


@pytest.fixture
def evidence(request: pytest.FixtureRequest, lab: Lab) -> Path:
    """This test's evidence folder; captures taken during the test land there, and after it the lab's
    evidence (lab/evidence.py)."""
    folder = Path(request.config.getoption("--artifacts")) / request.node.name.replace("/", "_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for host in lab.hosts.values():
        host.artifacts = folder
    request.node.stash[_EVIDENCE] = (lab, folder)
    return folder


_EVIDENCE = pytest.StashKey[tuple[Any, Path]]()
_SEEN = pytest.StashKey[leakcheck.Seen]()  # what the session saw, for the leak check


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.when != "call" or _EVIDENCE not in item.stash:
        return
    lab, folder = item.stash[_EVIDENCE]
    # A test marked own_evidence (a catalogue case) saved its evidence itself, before its lab was restored.
    own = item.get_closest_marker("own_evidence")
    tails = (
        _saved_tails(folder)
        if own
        else _collect_evidence(lab, folder, item.config.stash.get(_SEEN, leakcheck.Seen()).keys)
    )
    if report.failed:
        text = f"evidence: {folder}\n" + "".join(
            f"--- last lines of iked's log on {host} ---\n{tail}\n" for host, tail in tails.items()
        )
        report.sections.append(("ikedlab evidence", text))
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("ikedlab evidence", text)


def _saved_tails(folder: Path) -> dict[str, str]:
    """The last lines of each gateway's iked log among the evidence already saved in `folder`."""
    from lab.evidence import TAIL

    return {
        log.name.removesuffix(".iked.log"): "\n".join(log.read_text().strip().splitlines()[-TAIL:])
        for log in sorted(folder.glob("*.iked.log"))
    }


def _collect_evidence(lab: Lab, folder: Path, keys: set[str]) -> dict[str, str]:
    """The lab's evidence (transcripts, configs, each gateway's iked log and SAs) in the test's folder;
    each gateway's last lines of iked's log. The SA keys the kernels hold now go into `keys`."""
    from lab.errors import IkedlabError
    from lab.evidence import PROBLEM

    try:
        return lab.save_evidence(folder, keys)
    except (IkedlabError, OSError) as e:
        return {PROBLEM: f"could not collect everything: {e}"}
