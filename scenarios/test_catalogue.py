"""The iked regression catalogue: every case folder under scenarios/cases/ is a test, named after its folder.

A case runs on the session's lab, restored from its warm snapshot after it (lab.catalogue.runner). A case a
gateway's platform cannot do is skipped with the platform's own reason; a known failure (the case's `known:`,
for this cell) is a strict xfail naming its reference, and only while the failure says what it is known to
say. `--cases NAME,NAME` picks cases; `--cell NAME` says which cell this lab is (make catalogue).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.catalogue import CASES_DIR, case_dirs
from lab.catalogue.case import CaseError, load_case
from lab.catalogue.cells import PHASES_FILE
from lab.catalogue.judge import CheckFailed
from lab.catalogue.leftovers import LeftoverFound
from lab.catalogue.pki import Pki
from lab.catalogue.runner import run_case, why_not
from lab.errors import IkedlabError

#: The handful `make test` runs (the rest carry the nightly marker): one of each kind — a PSK, certificates,
#: transport mode, a failure that must stay a failure — about 20 s each on a warm lab.
QUICK = ("psk", "cert-single-ca", "transport", "psk-fail")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_dir" not in metafunc.fixturenames:
        return
    wanted = [c for c in (metafunc.config.getoption("--cases") or "").replace(",", " ").split() if c]
    folders = case_dirs(CASES_DIR)
    if wanted:
        known = {f.name: f for f in folders}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise pytest.UsageError(f"--cases: no case {', '.join(missing)} in {CASES_DIR}")
        folders = [known[w] for w in wanted]
    params = [
        pytest.param(f, id=f.name, marks=() if wanted or f.name in QUICK else pytest.mark.nightly)
        for f in folders
    ]
    metafunc.parametrize("case_dir", params)


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    """The regress's CAs, made once for the session on this host; their keys removed at its end."""
    authority = Pki()
    yield authority
    authority.close()


@pytest.mark.own_evidence
def test_case(lab, case_dir: Path, pki: Pki, evidence: Path, request: pytest.FixtureRequest) -> None:
    cell = request.config.getoption("--cell")
    try:
        case = load_case(case_dir, lab.topology)
    except CaseError as e:
        pytest.fail("\n".join(e.lines("case")), pytrace=False)
    reason = why_not(case, lab)
    if reason:
        pytest.skip(reason)
    known = case.known_for(cell)
    try:
        outcome = run_case(lab, case, pki, evidence)
    except (CheckFailed, LeftoverFound, CaseError, IkedlabError) as e:
        failure = str(e)
        for k in known:
            if re.search(k.match, failure):
                pytest.xfail(f"known on {cell}: {k.describe()} — {failure}")
        pytest.fail(f"{case.name}: {failure}", pytrace=False)
    if known:
        pytest.fail(
            f"{case.name}: [XPASS(strict)] passed on {cell}, yet known to fail: {known[0].describe()}; "
            f"remove the entry from {case.name}/case.yaml",
            pytrace=False,
        )
    # Where the case's time went, beside its evidence: `make catalogue`'s summary and `make bench` read it.
    (evidence / PHASES_FILE).write_text(json.dumps(dict(outcome.phases)))
    print(f"{case.name}: {outcome.seconds:.1f}s ({', '.join(f'{p} {t:.1f}s' for p, t in outcome.phases)})")
    print("\n".join(outcome.steps))


@pytest.mark.nightly
def test_a_wrong_expectation_fails_naming_host_command_and_expectation(lab, pki: Pki, tmp_path: Path) -> None:
    """The psk case with one wrong step (its SAs said to be transport SAs): it fails, and its message names
    the step, the host, the command read and what was expected."""
    folder = tmp_path / "psk-wrong"
    shutil.copytree(CASES_DIR / "psk", folder)
    text = (folder / "case.yaml").read_text()
    (folder / "case.yaml").write_text(
        text.replace("protocol: esp, mode: tunnel}", "protocol: esp, mode: transport}")
    )
    case = load_case(folder, lab.topology)
    with pytest.raises(CheckFailed) as failed:
        run_case(lab, case, pki)
    e = failed.value
    assert (e.where, e.host) == ("steps[3]", "init"), str(e)
    assert e.command == lab.host("init").platform.kernel_state_command()
    assert str(e).startswith(f"steps[3]: init: `{e.command}`: expected an SA esp transport ")


def test_an_sa_left_behind_on_purpose_fails_the_case(lab, pki: Pki, tmp_path: Path) -> None:
    """The psk case with one more step: an ESP SA iked never made, added to init's kernel by hand. Stopping
    the daemons does not remove it, so the leftover check fails the case and names the host and the SA."""
    if not lab.host("init").run("test -x /bin/ip").ok:
        pytest.skip("the stray SA is added with Linux's ip xfrm")
    folder = tmp_path / "psk-leaks"
    shutil.copytree(CASES_DIR / "psk", folder)
    spi = "0x0badcafe"
    stray = (
        f"/bin/ip xfrm state add src 192.0.2.1 dst 198.51.100.1 proto esp spi {spi} mode tunnel"
        f" enc 'cbc(aes)' 0x{'11' * 16} auth-trunc 'hmac(sha256)' 0x{'22' * 32} 128"
    )
    with (folder / "case.yaml").open("a") as f:
        f.write(f'  - run: {{on: init, command: "{stray}"}}\n')
    case = load_case(folder, lab.topology)
    with pytest.raises(LeftoverFound) as leaked:
        run_case(lab, case, pki)
    said = str(leaked.value)
    assert "init" in said and spi.removeprefix("0x") in said, said
