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
    assert ikedconf.read_user_confs({"resp": mine}, ["init", "resp"], "guide.yaml") == {
        "resp": mine.read_text()
    }
    assert "iked is not installed on this host" in capsys.readouterr().err


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
