"""From a bug report to a case: `ikedlab case NAME --from BUNDLE` writes a case folder that loads, names the
lab's addresses as template variables, turns a shared PSK into the case's secret and carries the reported
failure as a known one; a bad name or an existing folder is refused with nothing written."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from lab.catalogue.case import load_case, render
from lab.catalogue.context import lab_context
from lab.catalogue.from_bundle import case_from_bundle
from lab.errors import IkedlabError
from lab.placement import load_topology
from lab.topology import guide_path

GUIDE = load_topology()


def conf(me: str, peer: str, side: str, mode: str) -> bytes:
    return (
        f"# my lab {{ braces }} and {{% jinja %}} words stay as written\n"
        f'ikev2 "vpn" {mode} esp from 10.0.{side}.0/24 to 10.0.{3 - int(side)}.0/24 '
        f'local {me} peer {peer} srcid {"init" if side == "1" else "resp"}.example.com psk "hunter22"\n'
    ).encode()


def bundle(tmp_path: Path, expect_failure: str | None = "authentication failed") -> Path:
    manifest = {
        "format": 1,
        "topology": "topology.yaml",
        "topology_name": "guide.yaml",
        "platforms": {h: "linux" for h in ("initlan", "init", "inet", "resp", "resplan")},
        "iked_conf": {"init": "user/init.iked.conf", "resp": "user/resp.iked.conf"},
        "expect_failure": expect_failure,
        "ikedlab": {"version": "0.1.0", "commit": "abc123"},
    }
    files = {
        "manifest.json": json.dumps(manifest).encode(),
        "topology.yaml": guide_path().read_bytes(),
        "user/init.iked.conf": conf("192.0.2.1", "198.51.100.1", "1", "active"),
        "user/resp.iked.conf": conf("198.51.100.1", "192.0.2.1", "2", "passive"),
        "hosts/init/iked.log": b"not read\n",
    }
    path = tmp_path / "report-42.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"ikedlab-bundle/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_bundle_becomes_a_case_that_renders_back_to_the_users_files(tmp_path):
    folder = case_from_bundle(bundle(tmp_path), "my-bug", tmp_path / "cases")
    case = load_case(folder, GUIDE)
    assert case.secrets == ("psk",) and case.reference.bug == "report-42.tar.gz"
    (known,) = case.known
    assert known.cells == ("*",) and known.match == "authentication failed"
    template = (folder / "init.iked.conf.j2").read_text()
    assert "{{ init.address }}" in template and "{{ resp.lan }}" in template and "hunter22" not in template
    context = lab_context(GUIDE, {}, {"psk": "fresh"}, case.name)
    text = render(case, *case.template_for("init", "iked.conf"), context, "init", "resp")
    assert text.splitlines()[1:] == [
        "# my lab { braces } and {% jinja %} words stay as written",
        'ikev2 "vpn" active esp from 10.0.1.0/24 to 10.0.2.0/24 local 192.0.2.1 peer 198.51.100.1 '
        'srcid init.example.com psk "fresh"',
    ]


def test_without_a_reported_failure_the_case_expects_a_healthy_tunnel(tmp_path):
    case = load_case(case_from_bundle(bundle(tmp_path, None), "fixed", tmp_path / "cases"), GUIDE)
    assert not case.known and [p.step.TYPE for p in case.steps] == ["tunnel", "ping"]


@pytest.mark.parametrize("name", ["../up", "My-Bug", ""])
def test_a_bad_name_or_an_existing_folder_is_refused(tmp_path, name):
    cases = tmp_path / "cases"
    with pytest.raises(IkedlabError, match="is not a case name"):
        case_from_bundle(bundle(tmp_path), name, cases)
    assert not cases.exists()
    case_from_bundle(bundle(tmp_path), "taken", cases)
    with pytest.raises(IkedlabError, match="taken exists: pick another name"):
        case_from_bundle(bundle(tmp_path), "taken", cases)
