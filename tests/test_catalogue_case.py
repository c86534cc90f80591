"""Case folders: every case of the catalogue loads and renders for the guide's lab; a bad one is refused with
one line naming its file and field, before any lab is touched; a template cannot reach outside its sandbox."""

import os
from pathlib import Path

import pytest

from lab.catalogue import CASES_DIR, case_dirs
from lab.catalogue.case import CaseError, load_case, render
from lab.catalogue.context import lab_context
from lab.catalogue.steps import STEP_TYPES, fields_of, yaml_name
from lab.ikedconf import check_on_host
from lab.placement import load_topology

GUIDE = load_topology()
#: openiked-portable regress/live/Makefile rev 1.34, REGRESS_TARGETS without their run- prefix.
UPSTREAM = {
    "ping-fail", "cert-single-ca", "cert-single-ca-asn1dn", "cert-no-ca", "config-address",
    "config-address-pool", "dstid-fail", "dstid", "dstid-multi", "srcid-multi", "cert-multi-ca",
    "cert-second-altname", "invalid-ke", "psk-fail", "psk", "intermediate-fail", "intermediate",
    "fragmentation", "transport", "singleikesa", "ipcomp", "udpencap-port",
}  # fmt: skip

MINIMAL = """\
description: a tunnel
reference: {upstream: psk}
steps:
  - tunnel: established
"""


def write_case(root: Path, name: str, case_yaml: str, **templates: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "case.yaml").write_text(case_yaml)
    for file, text in templates.items():
        (folder / file.replace("_", ".")).write_text(text)
    return folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(CaseError) as failed:
        load_case(folder, GUIDE)
    return failed.value.problems


@pytest.mark.parametrize("folder", case_dirs(CASES_DIR), ids=lambda p: p.name)
def test_every_case_of_the_catalogue_loads_and_renders(folder):
    case = load_case(folder, GUIDE)
    assert case.description and case.reference.describe()
    if case.reference.upstream:
        assert case.reference.upstream in UPSTREAM, (
            f"{case.name}: no regress target {case.reference.upstream}"
        )
    context = lab_context(GUIDE, {}, {s: "5e" * 20 for s in case.secrets}, case.name, ipv6=case.setup.ipv6)
    for gateway in GUIDE.gateways:
        found = case.template_for(gateway.name, "iked.conf")
        if case.setup.daemons == "running" and gateway.name not in dict(case.roles):
            assert found, f"{case.name}: no iked.conf template for {gateway.name}, and no role saying why"
        if found:
            text = render(case, *found, context, gateway.name, GUIDE.peer_of(gateway).name)
            assert "ikev2" in text
            verdict = check_on_host(text, f"{case.name}/{found[0]} for {gateway.name}")
            assert not verdict, verdict  # None: no iked on this host, the guests' judges it


def test_the_catalogue_names_cases_after_their_folders(tmp_path):
    folder = write_case(
        tmp_path, "my-case", MINIMAL, iked_conf_j2="ikev2 active esp from {{ me }} to {{ peer }}\n"
    )
    case = load_case(folder, GUIDE)
    assert case.name == "my-case" and case.steps[0].where == "steps[0]"
    context = lab_context(GUIDE, {})
    assert render(case, *case.template_for("init", "iked.conf"), context, "init", "resp") == (
        "ikev2 active esp from 192.0.2.1 to 198.51.100.1\n"
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        ("  - tunnle: established", "my/case.yaml: steps[1]: unknown step type 'tunnle' (types: tunnel, "),
        (
            "  - ping: {from: init, to: resp, cout: 5}",
            "my/case.yaml: steps[1].ping.cout: unknown field (fields: from, to, count",
        ),
        ("  - ping: {to: resp}", "my/case.yaml: steps[1].ping.from: missing (required)"),
        (
            "  - ping: {from: rsp, to: resp}",
            "my/case.yaml: steps[1].ping.from: 'rsp' is not a host of the lab (hosts: ",
        ),
        (
            "  - ping: {from: init, to: nowhere}",
            "my/case.yaml: steps[1].ping.to: 'nowhere' is neither a host of the lab",
        ),
        (
            "  - ping: {from: init, to: resp, count: many}",
            "my/case.yaml: steps[1].ping.count: expected a whole number, not 'many'",
        ),
        (
            "  - log: {on: init, matches: '(unclosed'}",
            "my/case.yaml: steps[1].log.matches: '(unclosed' is not a regular expression",
        ),
        ("  - log: {on: init}", "my/case.yaml: steps[1].log: give exactly one of matches or absent"),
        (
            "  - counters: {on: init, esp_in: lots}",
            "my/case.yaml: steps[1].counters.esp_in: expected a comparison such as '>= 5'",
        ),
        ("  - tunnel: maybe", "my/case.yaml: steps[1].tunnel.state: 'maybe' is not one of established, none"),
        (
            "  - flow: {on: [init, gateways, nobody], from: init, to: resp}",
            "my/case.yaml: steps[1].flow.on[2]: 'nobody' is not a host",
        ),
        (
            "  - [tunnel, established]",
            "my/case.yaml: steps[1]: a step is one mapping of a step type to its fields",
        ),
    ],
)
def test_a_wrong_step_is_one_line_naming_file_and_field(tmp_path, change, expected):
    folder = write_case(tmp_path, "my", MINIMAL + change + "\n")
    found = problems(folder)
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "reference: {upstream: psk}\nsteps: [{tunnel: established}]\n",
            "my/case.yaml: description: expected a text",
        ),
        ("description: x\nsteps: [{tunnel: established}]\n", "my/case.yaml: reference: expected a mapping"),
        ("description: x\nreference: {upstream: psk}\n", "my/case.yaml: steps: expected a list of steps"),
        (MINIMAL + "colour: blue\n", "my/case.yaml: colour: unknown field (fields: description, reference"),
        (MINIMAL + "requires: [teleport]\n", "my/case.yaml: requires[0]: 'teleport' is not a capability"),
        (MINIMAL + "setup: {masquerade: wan9}\n", "my/case.yaml: setup.masquerade: 'wan9' is not a link"),
        (MINIMAL + "pki: homemade\n", "my/case.yaml: pki: 'homemade' is not one of upstream"),
        (MINIMAL + "known: [{reason: r, reference: x}]\n", "my/case.yaml: known[0].match: expected a text"),
        (
            MINIMAL + "description: twice\n",
            "my/case.yaml: line 5: 'description' is defined twice (first on line 1)",
        ),
        ("description: [unclosed\n", "my/case.yaml: line 2: not valid YAML"),
    ],
)
def test_a_wrong_case_file_is_one_line_naming_its_field(tmp_path, text, expected):
    found = problems(write_case(tmp_path, "my", text))
    assert found and found[0].startswith(expected), found


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    laughs = "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\n"  # each level four times the last
    found = problems(write_case(tmp_path, "my", MINIMAL + laughs))
    assert found == [
        "my/case.yaml: line 5: a value anchored here (&) is used again by an alias (*): "
        "topologies take no aliases"
    ]


def test_a_long_regex_is_refused(tmp_path):
    found = problems(
        write_case(tmp_path, "my", MINIMAL + f"  - log: {{on: init, matches: '{'(a+)+' * 50}'}}\n")
    )
    assert found == [
        "my/case.yaml: steps[1].log.matches: expected a regular expression of at most 200 characters"
    ]


def test_yaml_booleans_are_true_and_false_only_so_on_is_a_field(tmp_path):
    folder = write_case(tmp_path, "my", MINIMAL + "  - log: {on: init, matches: x}\n")
    assert load_case(folder, GUIDE).steps[1].step.on == ("init",)


def test_a_case_folder_holds_only_case_files(tmp_path):
    folder = write_case(tmp_path, "my", MINIMAL)
    (folder / "notes.txt").write_text("x")
    (folder / "init.iked.conf.j2").symlink_to("/etc/passwd")
    (folder / "mars.iked.conf.j2").write_text("x")
    found = problems(folder)
    assert "my/init.iked.conf.j2: not a plain file (a case folder holds only files)" in found
    assert any(p.startswith("my/notes.txt: a case folder holds case.yaml") for p in found)
    assert any(p.startswith("my/mars.iked.conf.j2: 'mars' is not a gateway of the lab") for p in found)


@pytest.mark.parametrize("name", [".up", "Psk", "a b", "-x", "x" * 49])
def test_a_case_folder_name_is_a_plain_word(tmp_path, name):
    folder = tmp_path / "cases" / name
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.raises(
        CaseError, match=r"is not a case name: lower-case letters, digits and '-', at most 48$"
    ):
        load_case(folder, GUIDE)


def test_a_big_file_is_refused_unread(tmp_path):
    folder = write_case(tmp_path, "my", MINIMAL + "#" * 70_000 + "\n")
    assert problems(folder) == ["my/case.yaml: larger than 64 KiB, more than ikedlab reads"]


@pytest.mark.parametrize(
    "template, expected",
    [
        (
            "ikev2 {{ me.adress }}\n",
            "my/iked.conf.j2: 'lab.catalogue.context.HostView object' has no attribute 'adress'",
        ),
        ("ikev2 {% if %}\n", "my/iked.conf.j2: line 1: Expected an expression"),
        ("{{ secrets.psk }}\n", "my/iked.conf.j2: 'dict object' has no attribute 'psk'"),
        (
            "{{ ''.__class__.__mro__[1].__subclasses__() }}\n",
            "my/iked.conf.j2: access to attribute '__class__'",
        ),
        ("{% include '/etc/passwd' %}\n", "my/iked.conf.j2: no loader for this environment specified"),
    ],
)
def test_templates_are_checked_at_load_in_a_sandbox(tmp_path, template, expected):
    found = problems(write_case(tmp_path, "my", MINIMAL, iked_conf_j2=template))
    assert found and found[0].startswith(expected), found


def test_templates_see_names_addresses_ids_and_secrets(tmp_path):
    template = (
        "{{ me.name }} {{ me.side }} {{ me.address }} {{ me.lan }} {{ me.srcid }} {{ peer.name }} "
        "{{ resplan.address }} {{ secrets.psk }} {{ case }}\n"
    )
    folder = write_case(tmp_path, "my", MINIMAL + "secrets: [psk]\n", iked_conf_j2=template)
    case = load_case(folder, GUIDE)
    context = lab_context(GUIDE, {}, {"psk": "s3cret"}, case.name)
    assert render(case, *case.template_for("resp", "iked.conf"), context, "resp", "init") == (
        "resp right 198.51.100.1 10.0.2.0/24 resp.example.com init 10.0.2.2 s3cret my\n"
    )


def test_ipv6_addresses_follow_the_ipv4_plan():
    context = lab_context(GUIDE, {}, ipv6=True)
    init, resp = context.hosts["init"], context.hosts["resp"]
    assert (init.address6, init.lan6) == ("2001:db8:2::1", "2001:db8:1::/64")
    assert (resp.address6, resp.lan6) == ("2001:db8:3::1", "2001:db8:4::/64")
    assert context.resolve("resplan.address6") == "2001:db8:4::2"
    with pytest.raises(ValueError, match="init has no an IPv6|init has no"):
        lab_context(GUIDE, {}).resolve("init.address6")


def test_every_step_field_is_documented():
    for kind, cls in STEP_TYPES.items():
        assert cls.DOC, kind
        for f in fields_of(cls):
            assert f.metadata["kind"].name, f"{kind}.{yaml_name(f.name)}"


def test_the_docs_name_every_step_type():
    docs = Path(__file__).resolve().parent.parent / "docs" / "catalogue.md"
    if not docs.exists():
        pytest.skip("docs/catalogue.md not written yet")
    text = docs.read_text()
    missing = [kind for kind in STEP_TYPES if f"`{kind}`" not in text]
    assert not missing, f"docs/catalogue.md does not describe {missing}"


def test_cases_dir_is_the_checkouts():
    assert CASES_DIR.is_dir() and os.path.samefile(
        CASES_DIR.parent, Path(__file__).parent.parent / "scenarios"
    )
