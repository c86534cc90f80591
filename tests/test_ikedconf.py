"""What reaches a guest is checked before any guest boots: a user's iked.conf judged by the host's iked and
named by the user's file and line; topology values quoted wherever they meet a guest shell."""

import base64
import hashlib
import shlex
from pathlib import Path

import pytest

from lab import ikedconf, topology
from lab.console import Result
from lab.errors import IkedConfError
from lab.host import Host
from lab.platforms import get_platform

GOOD = """\
init="192.0.2.1"
resp="198.51.100.1"
ikev2 'resp' passive esp from 10.0.2.0/24 to 10.0.1.0/24 local $resp peer $init srcid resp.example.com
"""
needs_iked = pytest.mark.skipif(ikedconf.iked_on_host() is None, reason="iked is not installed on this host")


def test_verdict_lines_name_the_users_file_and_line():
    output = "/tmp/ikedlab-x.conf: 6: syntax error\n/tmp/ikedlab-x.conf: no valid configuration rules found\n"
    assert ikedconf.name_lines(output, "/tmp/ikedlab-x.conf", "my.conf") == ["my.conf:6: syntax error"]


def test_verdict_lines_without_a_line_number_keep_their_words():
    output = "iked: parent: pushfile: /etc/iked.conf: No such file or directory\n"
    assert ikedconf.name_lines(output, "/etc/iked.conf", "my.conf") == [
        "pushfile: my.conf: No such file or directory"
    ]


@needs_iked
def test_the_hosts_iked_accepts_a_good_file():
    assert ikedconf.check_on_host(GOOD, "good.conf") == []


@needs_iked
def test_the_hosts_iked_names_every_bad_line():
    bad = GOOD.replace("passive esp", "pasive esp") + "ikev2 esp frm any\n"
    assert ikedconf.check_on_host(bad, "conf/mine.conf") == [
        "conf/mine.conf:3: syntax error",
        "conf/mine.conf:4: syntax error",
    ]


def test_iked_conf_for_a_host_that_is_no_gateway(tmp_path):
    mine = tmp_path / "mine.conf"
    mine.write_text(GOOD)
    with pytest.raises(IkedConfError) as err:
        ikedconf.read_user_confs({"nosuchhost": mine, "inet": mine}, ["init", "resp"], "guide.yaml")
    assert err.value.problems == [
        f"--iked-conf nosuchhost={mine}: no gateway 'nosuchhost' in guide.yaml (gateways: init, resp)",
        f"--iked-conf inet={mine}: no gateway 'inet' in guide.yaml (gateways: init, resp)",
    ]
    assert str(err.value).endswith("(and 1 more problem)")


def test_unreadable_iked_conf(tmp_path):
    with pytest.raises(IkedConfError, match=r"^--iked-conf resp=.*/nope.conf: cannot read .*No such file"):
        ikedconf.read_user_confs({"resp": tmp_path / "nope.conf"}, ["init", "resp"], "guide.yaml")


def test_without_iked_on_the_host_it_says_so_and_leaves_the_check_to_the_guests(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PATH", str(tmp_path))
    mine = tmp_path / "mine.conf"
    mine.write_text("not iked.conf at all\n")
    texts = ikedconf.read_user_confs({"resp": mine}, ["init", "resp"], "guide.yaml")
    assert texts == {"resp": mine.read_text()}
    ikedconf.judge_user_confs(texts, {"resp": str(mine)})
    assert "iked is not installed on this host" in capsys.readouterr().err


NATT = "ikev2 'x' active natt esp from 10.0.1.0/24 to 10.0.2.0/24 peer 192.0.2.1\n"  # `natt`: iked 7.4 on


@needs_iked
def test_an_image_iked_runs_on_the_host_with_its_own_loader_and_libraries(tmp_path):
    """What the image build keeps beside the image (iked, its loader and libraries, OpenSSL's legacy provider
    and configuration), here taken from this host's own tree, is a judge that runs nothing of the host's."""
    from lab.images.libraries import copy_closure
    from lab.images.linux import IKED_ON_HOST

    copied = copy_closure(Path("/"), IKED_ON_HOST, tmp_path)
    assert "usr/sbin/iked" in copied and any("libcrypto" in c for c in copied)
    (tmp_path / "etc/ssl").mkdir(parents=True)
    (tmp_path / "etc/ssl/openssl.cnf").write_text("")
    judge = ikedconf.tree_judge(tmp_path, "a copied tree")
    assert judge.argv[0].startswith(str(tmp_path)) and "--inhibit-cache" in judge.argv
    assert ikedconf.check_with(judge, GOOD, "good.conf") == []
    assert ikedconf.check_with(judge, GOOD + "ikev2 esp frm any\n", "mine.conf") == [
        "mine.conf:4: syntax error"
    ]


@needs_iked
def test_each_file_is_judged_by_its_gateways_iked_and_only_by_it(tmp_path, capsys):
    """A file for a gateway whose iked the host cannot run (OpenBSD's) is left to the guest, said in one
    line; the host's 7.2 does not judge it (it refuses `natt`, which OpenBSD has since 7.7, iked 7.4 too)."""
    bad = GOOD + "ikev2 esp frm any\n"
    sources = {"init": "bad.conf", "resp": "natt.conf"}
    judges = {"init": ikedconf.host_judge(), "resp": None}
    ikedconf.judge_user_confs({"resp": NATT}, sources, judges)
    assert "natt.conf (resp) judged by the gateway's own iked" in capsys.readouterr().err
    with pytest.raises(IkedConfError) as err:
        ikedconf.judge_user_confs({"init": bad, "resp": NATT}, sources, judges)
    assert err.value.problems == ["bad.conf:4: syntax error"]
    with pytest.raises(IkedConfError, match="natt.conf:1: syntax error"):  # the host's own iked: 7.2
        ikedconf.judge_user_confs({"resp": NATT}, sources)


def _cached_iked_tree(variant):
    from lab.images import cached_linux_image

    image = cached_linux_image(variant=variant)
    return image.iked_tree if image else None


@pytest.mark.skipif(_cached_iked_tree("trixie") is None, reason="no trixie image with its iked in the cache")
def test_the_74_image_judges_what_74_accepts():
    """The trixie variant's iked 7.4 (glibc 2.41, OpenSSL 3.5) runs on this bookworm host from the image's
    own tree, and accepts `natt`, which the host's and the bookworm image's iked 7.2 refuse."""
    judge = ikedconf.tree_judge(_cached_iked_tree("trixie"), "iked 7.4")
    assert ikedconf.check_with(judge, NATT, "natt.conf") == []
    assert ikedconf.check_with(judge, NATT + "frm\n", "natt.conf") == ["natt.conf:2: syntax error"]
    bookworm = _cached_iked_tree(None)
    if bookworm:
        assert ikedconf.check_with(ikedconf.tree_judge(bookworm, "7.2"), NATT, "n.conf") == [
            "n.conf:1: syntax error"
        ]


@pytest.mark.parametrize(
    "items, problem",
    [
        (["resp"], "--iked-conf resp: expected HOST=FILE"),
        (["=x.conf"], "--iked-conf =x.conf: expected HOST=FILE"),
        (["resp=a.conf", "resp=b.conf"], "--iked-conf resp=b.conf: resp already has a.conf"),
    ],
)
def test_malformed_iked_conf_options(items, problem):
    with pytest.raises(IkedConfError) as err:
        ikedconf.parse_options(items)
    assert err.value.problems == [problem]


class _RecordingConsole:
    """Stands in for a console: records the command, answers with the checksum of what it was given."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def check(self, command: str, *, timeout: float = 60, stdin: str | None = None) -> Result:
        self.commands.append(command)
        return Result(command, 0, hashlib.sha256(base64.b64decode(stdin or "")).hexdigest() + "  -\n")

    def run(self, command: str, *, timeout: float = 60) -> Result:
        return self.check(command)


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_a_path_made_of_topology_values_reaches_the_shell_quoted(platform):
    spec = topology.load(None, ("linux", "openbsd")).host("init")
    console = _RecordingConsole()
    host = Host(spec, get_platform(platform), console, Path("/nonexistent"))  # type: ignore[arg-type]
    awkward = "/etc/iked/pubkeys/fqdn/a b;reboot"
    host.write_file(awkward, "key\n")
    command = console.commands[-1]
    assert f" > {shlex.quote(awkward)})" in command and " b;reboot" not in command.replace(
        shlex.quote(awkward), ""
    )


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_capture_filters_and_addresses_are_one_shell_word(platform):
    dialect = get_platform(platform)
    command = dialect.capture_start_command("wire", "/tmp/x.pcap", "eth0", "host 10.0.1.2 and icmp")
    assert "'host 10.0.1.2 and icmp'" in command
    assert dialect.ping_command("10.0.2.2; reboot", 1, 1).endswith("'10.0.2.2; reboot'")
