"""One provisioning plan, three consumers: provision() over the consoles, `ikedlab render`, the Vagrantfile's
render and lab.json. Each is checked against the plan itself, so none can drift from the others."""

import json
import re
import shlex
from pathlib import Path

import pytest
from fakes import FakeConsole, recorded

from lab import plan as plans
from lab.host import Host
from lab.placement import load_topology, resolve_platforms
from lab.platforms import FileSpec, get_platform, platform_names
from lab.provision import provision
from lab.vagrant import VAGRANT_NICS, render, vagrant_plan

GUIDE = load_topology()


def _plan(platform: str, options: plans.Options | None = None) -> plans.Plan:
    return plans.build_plan(GUIDE, resolve_platforms(GUIDE, platform), options or plans.Options())


def _text(content: str) -> str:
    return content if content.endswith("\n") or not content else content + "\n"  # as a heredoc delivers it


def _normal(actions) -> list:
    return [FileSpec(a.path, _text(a.content), a.mode) if isinstance(a, FileSpec) else a for a in actions]


def _hosts(plan: plans.Plan, tmp_path: Path) -> dict[str, Host]:
    hosts = {}
    for name, hp in plan.hosts.items():
        console = FakeConsole(
            name, hp.platform, {hp.platform.sa_command(): recorded(hp.platform.name, "sa_established")}
        )
        hosts[name] = Host(hp.spec, hp.platform, console, tmp_path)  # type: ignore[arg-type]
    return hosts


@pytest.mark.parametrize("platform", platform_names())
def test_provision_runs_exactly_the_plan_then_the_cross_host_steps(platform, tmp_path):
    plan = _plan(platform)
    hosts = _hosts(plan, tmp_path)
    provision(plan, hosts)
    for name, hp in plan.hosts.items():
        log = hosts[name].console.log
        p = hp.platform
        if not hp.spec.ipsec:
            assert log == _normal(hp.actions()), name
            continue
        conf = hp.ike_conf
        assert conf
        local = _normal(hp.actions(plans.NETWORK) + hp.actions(plans.KEYS))
        assert log[: len(local)] == local, name
        rest = log[len(local) :]
        # Then: its public key read, the peer's installed, iked.conf written and judged, iked started,
        # the SAs read.
        peer = GUIDE.peer_of(hp.spec).name
        assert rest[0] == f"cat {shlex.quote(p.public_key)}"
        assert rest[1] == FileSpec(
            plan.peer_key_path(name),
            f"-----BEGIN PUBLIC KEY-----\nFAKE{peer}\n-----END PUBLIC KEY-----\n",
            0o644,
        )
        assert rest[2:6] == [
            *_normal([conf]),
            p.ike_check_command(),
            p.ike_log_length_command(),  # iked's log marked: what it says after its start is news
            p.ike_start_command(),
        ]
        assert set(rest[6:]) == {p.sa_command()}


def test_passive_gateways_start_first(tmp_path):
    plan = _plan("linux")
    assert plan.start_order() == [["resp"], ["init"]]
    order: list[str] = []
    hosts = _hosts(plan, tmp_path)
    for h in hosts.values():
        h.console.answers[h.platform.ike_start_command()] = ""
        original = h.console.run

        def run(command, *, timeout=0, stdin=None, _h=h, _run=original):
            if command == _h.platform.ike_start_command():
                order.append(_h.name)
            return _run(command, timeout=timeout, stdin=stdin)

        h.console.run = run
    provision(plan, hosts)
    assert order == ["resp", "init"]


def _read_render(root: Path) -> tuple[list[str], list]:
    """provision.sh and files/ back into the plan's actions (and the phases it announces)."""
    phases, actions = [], []
    lines = (root / "provision.sh").read_text().splitlines()
    assert lines[:1] == ["#!/bin/sh"] and "set -e" in lines[:3]
    for line in lines[3:]:
        if m := re.match(r"^# --- (\S+)$", line):
            phases.append(m.group(1))
        elif m := re.match(r'^install -m ([0-7]+) "\$\(dirname "\$0"\)/files(\S+)" (\S+)$', line):
            path = shlex.split(m.group(3))[0]
            assert m.group(2) == path
            actions.append(
                FileSpec(path, (root / "files" / path.lstrip("/")).read_text(), int(m.group(1), 8))
            )
        else:
            actions.append(line)
    return phases, actions


@pytest.mark.parametrize("platform", platform_names())
def test_render_writes_exactly_the_plan(platform, tmp_path):
    plan = _plan(platform)
    plans.render_lab(None, platform, tmp_path)
    for name, hp in plan.hosts.items():
        phases, actions = _read_render(tmp_path / name)
        assert phases == list(hp.steps)
        assert actions == list(hp.actions()), name


def test_render_honours_a_users_iked_conf(tmp_path):
    mine = tmp_path / "mine.conf"
    text = _plan("linux").hosts["resp"].ike_conf.content + "# mine\n"  # type: ignore[union-attr]
    mine.write_text(text)
    plans.render_lab(None, "linux", tmp_path / "out", ike_conf_files={"resp": mine})
    assert (tmp_path / "out" / "resp" / "files" / "etc" / "iked.conf").read_text() == text
    assert "# mine" not in (tmp_path / "out" / "init" / "files" / "etc" / "iked.conf").read_text()


def test_options_shape_the_plan_everywhere():
    plan = _plan("linux", plans.Options(peer_any=("resp",), dpd_interval=5))
    assert "peer any" in plan.hosts["resp"].ike_conf.content  # type: ignore[union-attr]
    assert "set dpd_check_interval 5" in plan.hosts["init"].ike_conf.content  # type: ignore[union-attr]


def test_the_vagrant_render_is_the_plan_on_boxes_and_lab_json_carries_its_facts(tmp_path):
    summary = json.loads(render(None, "openbsd", tmp_path / "vagrant").read_text())
    plan = vagrant_plan(None, "openbsd")
    assert all(hp.platform.interface_name(0) == "vio1" for hp in plan.hosts.values())
    assert VAGRANT_NICS == summary["interface_offset"] == 1
    assert summary["start_order"] == plan.start_order()
    for name, hp in plan.hosts.items():
        phases, actions = _read_render(tmp_path / "vagrant" / name)
        assert (phases, actions) == (list(hp.steps), list(hp.actions())), name
        assert summary["hosts"][name]["phases"] == list(hp.steps)
        if hp.spec.ipsec:
            facts = summary["hosts"][name]["ipsec"]
            assert facts["peer_pubkey_path"] == plan.peer_key_path(name)
            assert facts["ike_start"] == hp.platform.ike_start_command()
            assert facts["ike_conf"] == hp.platform.ike_conf


def test_a_mixed_lab_plans_each_host_in_its_own_dialect(tmp_path):
    platforms = resolve_platforms(GUIDE, "linux") | {"init": get_platform("openbsd")}
    plan = plans.build_plan(GUIDE, platforms)
    assert any("hostname.vio" in a.path for a in plan.hosts["init"].actions() if isinstance(a, FileSpec))
    assert "ikesa enc" in plan.hosts["resp"].ike_conf.content  # type: ignore[union-attr]
