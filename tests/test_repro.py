"""Fast tests of the bug reproducers' tools: impairment commands, capture streaming, bundles (secrets never
inside, replay inputs), iked's error lines, traffic sizes, and the command line that drives them."""

import base64
import json
import re
import struct
import tarfile
import threading
import time
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab import bundle, capture, failure, redact, traffic, versions
from lab.cli import build_parser
from lab.errors import LabError
from lab.host import Host
from lab.impair import Impairment, clear_command, impair_command
from lab.placement import load_topology as load
from lab.plan import Options
from lab.platforms import BootMedia, get_platform
from lab.replay import differences, open_bundle

# --- impairment ---------------------------------------------------------------------------------------------


def test_delay_shapes_both_directions_through_ifb():
    command = impair_command("eth0", Impairment(delay_ms=100, jitter_ms=10, loss=1.5, rate="1mbit"))
    assert "tc qdisc add dev eth0 root netem delay 100ms 10ms loss 1.5% rate 1mbit" in command
    assert "tc qdisc add dev ifb-eth0 root netem delay 100ms 10ms loss 1.5% rate 1mbit" in command
    assert "matchall action mirred egress redirect dev ifb-eth0" in command
    assert command.endswith("link set eth0 mtu 1500")


def test_mtu_alone_needs_no_netem():
    command = impair_command("eth1", Impairment(mtu=1280))
    assert "root netem" not in command and command.endswith("/bin/ip link set eth1 mtu 1280")


def test_clear_is_quiet_about_what_is_not_there():
    assert clear_command("eth0").startswith("{ { /usr/sbin/tc qdisc del dev eth0 root;")
    assert "2>/dev/null" in clear_command("eth0")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"loss": 120}, "--loss 120: a percentage"),
        ({"jitter_ms": 5}, "--jitter needs a --delay"),
        ({"rate": "fast"}, "--rate: 'fast' is not a rate"),
        ({"rate": "1mbit\n"}, "--rate: '1mbit\\\\n' is not a rate"),
        ({"mtu": 100}, "--mtu 100: from 576"),
    ],
)
def test_bad_impairments_are_one_line(settings, message):
    with pytest.raises(LabError, match=message):
        Impairment(**settings)


# --- capture ------------------------------------------------------------------------------------------------


def test_the_router_end_of_a_link_is_dumped_by_default():
    topology = load()
    assert capture.link_end(topology, "wan1") == capture.LinkEnd("wan1", "inet", 0)
    assert capture.link_end(topology, "wan2") == capture.LinkEnd("wan2", "inet", 1)
    assert capture.link_end(topology, "lan1") == capture.LinkEnd("lan1", "initlan", 0)
    assert capture.link_end(topology, "wan1", at="init").nic == 0
    with pytest.raises(LabError, match="no link 'wan9'"):
        capture.link_end(topology, "wan9")
    with pytest.raises(LabError, match="joins init and inet, not resp"):
        capture.link_end(topology, "wan1", at="resp")


def test_follow_streams_a_growing_pcap_to_the_end(tmp_path):
    pcap = tmp_path / "x.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65536, 1)
    pcap.write_bytes(header)
    out = BytesIO()
    finished = threading.Event()

    def writer() -> None:
        for i in range(5):
            with pcap.open("ab") as f:
                f.write(struct.pack("<IIII", i, 0, 4, 4) + b"abcd")
            time.sleep(0.02)
        finished.set()

    thread = threading.Thread(target=writer)
    thread.start()
    copied = capture.follow(pcap, out, finished.is_set)
    thread.join()
    assert copied == len(header) + 5 * 20 == len(out.getvalue())
    assert out.getvalue() == pcap.read_bytes()


# --- bundles ------------------------------------------------------------------------------------------------

PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n"


def test_scrub_removes_private_keys_and_sa_keys_but_keeps_spis():
    text = f"before\n{PEM}after\n\tenc cbc(aes) 0x{'ab' * 32}\nspi 0x229bfa8c ispi 0xe0f1a5b6180a86f6\n"
    clean = redact.scrub(text)
    assert "PRIVATE KEY" not in clean and "ab" * 32 not in clean
    assert "0x229bfa8c" in clean and "0xe0f1a5b6180a86f6" in clean and "before" in clean


class _FakeHost:
    def __init__(self, name, gateway):
        self.name = name
        self.spec = SimpleNamespace(ipsec=gateway)
        self.platform = SimpleNamespace(
            versions_command=lambda: "versions",
            parse_versions=lambda out: {"iked": "OpenIKED 7.2"},
            ike_log_command=lambda: "log",
            sa_command=lambda: "sa",
            kernel_ipsec_command=lambda: "xfrm",
            counters_command=lambda spec: "counters",
        )

    evidence_commands = Host.evidence_commands  # what to read is the real Host's choice

    def run(self, command):
        outputs = {
            "log": f"authentication failed for FQDN/init.example.com\n{PEM}",
            "xfrm": f"enc cbc(aes) 0x{'12' * 32}\n",
        }
        return SimpleNamespace(output=outputs.get(command, f"{command} of {self.name}\n"))


HEX_PSK = "0x" + "c0ffee00" * 8
USER_CONF = f"# the user's own file\nikev2 'resp' passive esp \\\n\tsrcid resp psk {HEX_PSK}\n"


class _FakeLab:
    def __init__(self, run_dir: Path):
        self.name = "t"
        self.run_dir = run_dir
        self.hosts = {n: _FakeHost(n, n in ("init", "resp")) for n in ("initlan", "init", "resp")}
        run_dir.mkdir(parents=True)
        self.options = Options(ike_conf={"resp": USER_CONF, "init": USER_CONF.replace("passive", "active")})
        for sub in ("console", "configs", "captures"):
            (run_dir / sub).mkdir(parents=True)
        (run_dir / "console" / "init.log").write_text(f"init# cat key\n{PEM}")
        (run_dir / "configs" / "resp.iked.conf").write_text("ikev2 'resp' passive esp\n")
        (run_dir / "captures" / "wan1.pcap").write_bytes(b"\xd4\xc3\xb2\xa1pcap")

    def read(self):
        return SimpleNamespace(
            topology=load(),
            platforms={h: get_platform("linux") for h in ("init", "resp", "initlan")},
            expect_failure="authentication failed",
        )

    def gateways(self):
        return [self.hosts["init"], self.hosts["resp"]]


def test_a_bundle_holds_the_evidence_and_never_a_private_key(tmp_path):
    lab = _FakeLab(tmp_path / "run")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    image_key = (
        "c182f35301b6a4d5be98224cf775d38efdd4e488b45a216ce70cb5bbda99c35b"  # the image's manifest digest
    )
    (tmp_path / "image.json").write_text(json.dumps({"key": image_key}))
    versions.record_media(lab.run_dir, {"linux": BootMedia(kernel=kernel)}, None)
    archive = bundle.make_bundle(lab, tmp_path / "b.tar.gz", "status table")  # type: ignore[arg-type]
    with tarfile.open(archive) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    assert not [name for name, data in members.items() if b"PRIVATE KEY" in data]
    assert b"authentication failed" in members["hosts/resp/iked.log"]
    assert b"0x[redacted]" in members["hosts/init/kernel-ipsec.txt"]
    assert "hosts/initlan/iked.log" not in members and "hosts/initlan/versions.txt" in members
    assert members["pcaps/wan1.pcap"] == b"\xd4\xc3\xb2\xa1pcap"
    assert b"up --from b.tar.gz" in members["README.md"]
    manifest = json.loads(members["manifest.json"])
    assert manifest["guests"]["init"] == {"iked": "OpenIKED 7.2"}
    assert manifest["images"]["linux"]["kernel"].startswith("sha256:")
    assert manifest["images"]["linux"]["manifest"] == f"sha256:{image_key}"  # a digest, not a secret
    assert manifest["expect_failure"] == "authentication failed"

    replay = open_bundle(archive, tmp_path / "replay")
    assert replay.platforms["init"] == "linux" and replay.expect_failure == "authentication failed"
    assert HEX_PSK[2:] not in str(members).lower(), "a bundle to publish holds no PSK"
    assert members["user/resp.iked.conf"] == USER_CONF.replace(HEX_PSK, '"ikedlab-redacted-psk-1"').encode()
    assert manifest["secrets"] == "1 pre-shared key replaced" and b"placeholder" in members["README.md"]
    assert replay.ike_conf_files["resp"].read_bytes() == members["user/resp.iked.conf"]
    assert load(replay.topology).hosts.keys() == load().hosts.keys()
    assert not [
        line for line in differences(replay, {"linux": BootMedia(kernel=kernel)}) if "manifest" in line
    ]
    assert differences(replay, {"linux": BootMedia(kernel=kernel)}) == [] or all(
        line.startswith("ikedlab") for line in differences(replay, {"linux": BootMedia(kernel=kernel)})
    )
    kernel.write_bytes(b"another kernel")
    changed = differences(replay, {"linux": BootMedia(kernel=kernel)})
    assert any(line.startswith("linux image kernel: bundle sha256:") for line in changed)


def test_a_bundle_made_with_show_secrets_replays_the_users_files_byte_for_byte(tmp_path):
    lab = _FakeLab(tmp_path / "run")
    versions.record_media(lab.run_dir, {}, None)
    archive = bundle.make_bundle(lab, tmp_path / "b.tar.gz", show_secrets=True)  # type: ignore[arg-type]
    replay = open_bundle(archive, tmp_path / "replay")
    assert replay.ike_conf_files["resp"].read_bytes() == USER_CONF.encode()
    assert replay.ike_conf_files["init"].read_bytes() == USER_CONF.replace("passive", "active").encode()
    assert replay.manifest.secrets == "as given"
    with tarfile.open(archive) as tar:
        readme = next(tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith("README.md"))
    assert b"never publish it" in readme


def test_something_that_is_no_bundle_is_one_line(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(LabError, match="junk.tar.gz: not an ikedlab bundle"):
        open_bundle(junk, tmp_path / "x")


# --- iked's failures, traffic -------------------------------------------------------------------------------


def test_expect_failure_reads_iked_log_from_its_start_and_names_the_line():
    class Gateway:
        name, ike_log_mark = "resp", 2

        def iked_log(self, since: int) -> str:
            lines = [
                "old: authentication failed",
                "old",
                "spi=0x1: ikev2_send_auth_failed: authentication failed",
            ]
            return "\n".join(lines[since:])

    seen = failure.wait_for_failure(
        [Gateway()],  # type: ignore[list-item]
        "authentication failed",
        lab="repro",
        timeout=1,
    )
    assert seen == failure.Seen("resp", "spi=0x1: ikev2_send_auth_failed: authentication failed")


def test_traffic_sizes():
    assert traffic.packets_for(nbytes=10280, seconds=None, size=1000, interval=0.02) == 10
    assert traffic.packets_for(nbytes=None, seconds=2, size=1000, interval=0.02) == 100
    with pytest.raises(LabError, match="either --bytes or --seconds"):
        traffic.packets_for(nbytes=None, seconds=None, size=1000, interval=0.02)
    with pytest.raises(LabError, match="at least 10s"):
        traffic.short_lifetimes(5)


# --- the command line ---------------------------------------------------------------------------------------


def test_the_new_commands_parse():
    parser = build_parser()
    args = parser.parse_args(["impair", "wan1", "--delay", "100", "--jitter", "5"])
    assert (args.link, args.delay, args.jitter, args.clear) == ("wan1", 100, 5, False)
    assert parser.parse_args(["impair", "--clear"]).clear
    assert parser.parse_args(["capture", "wan1", "-w", "-"]).write == "-"
    assert parser.parse_args(["up", "--expect-failure"]).expect_failure == ""
    assert parser.parse_args(["up", "--expect-failure", "auth"]).expect_failure == "auth"
    assert parser.parse_args(["up", "--from", "b.tar.gz"]).from_bundle == Path("b.tar.gz")
    assert parser.parse_args(["traffic", "initlan", "resplan", "--bytes", "1000"]).nbytes == 1000
    with pytest.raises(SystemExit):
        parser.parse_args(["traffic", "initlan", "resplan"])


# --- the HTML report ----------------------------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="test_2_ping" name="test_lans_ping" time="2.5"/>
<testcase classname="test_6_wrong_key" name="test_no_tunnel" time="14.8">
  <failure message="AssertionError: resp has a tunnel">trace</failure></testcase>
<testcase classname="test_7_restart" name="test_restart" time="121.0">
  <skipped type="pytest.xfail" message="liveness"/></testcase>
<testcase classname="test_8_nat" name="test_nat" time="0.1"><skipped message="no masquerade"/></testcase>
</testsuite></testsuites>
"""


def test_the_report_shows_verdicts_picture_versions_and_evidence(tmp_path):
    from lab.report import write_report

    (tmp_path / "junit-scenarios.xml").write_text(JUNIT)
    evidence = tmp_path / "scenarios" / "test_no_tunnel"
    evidence.mkdir(parents=True)
    (evidence / "resp.iked.log").write_text("authentication failed\n")
    (evidence / "wan1.pcap").write_bytes(b"pcap")
    (tmp_path / "scenarios" / "lab.json").write_text(
        json.dumps(
            {
                "platform": "linux",
                "topology": str(load().path),
                "topology_text": load().source,
                "guests": {"init": {"iked": "OpenIKED 7.2"}},
            }
        )
    )
    page = write_report(tmp_path).read_text()
    assert "<title>ikedlab report: failed</title>" in page
    assert "1 passed" in page and "1 failed" in page and "2 skipped or expected to fail" in page
    assert 'class="badge xfailed">xfailed' in page and "AssertionError: resp has a tunnel" in page
    assert 'href="scenarios/test_no_tunnel/resp.iked.log"' in page
    assert 'href="scenarios/test_no_tunnel/wan1.pcap"' in page
    shown = re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    drawing = base64.b64decode(shown[1]).decode() if shown else page
    assert ("<svg" in drawing or "<pre>" in page) and "resplan" in drawing and "OpenIKED 7.2" in page
