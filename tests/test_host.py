"""host.py against a fake console: verified writes, polling with a deadline, captures end to end."""

import dataclasses
import time

import pytest
from fakes import FakeConsole, recorded

from lab.errors import ProvisionError
from lab.host import Host
from lab.placement import load_topology
from lab.platforms import get_platform
from lab.readings import Capture

GUIDE = load_topology()


@pytest.fixture(params=["linux", "openbsd"])
def host(request, tmp_path):
    platform = get_platform(request.param)
    return Host(GUIDE.host("init"), platform, FakeConsole("init", platform), tmp_path)  # type: ignore[arg-type]


def test_a_written_file_is_proven_by_its_checksum(host):
    host.write_file("/etc/x.conf", "a = 1", 0o600)
    assert host.console.files["/etc/x.conf"] == "a = 1"  # byte for byte
    assert host.read_file("/etc/x.conf") == "a = 1"


def test_a_file_corrupted_on_the_way_is_an_error_naming_host_and_path(host, monkeypatch):
    real = host.console.run

    def garbled(command, *, timeout=0, stdin=None):
        result = real(command, timeout=timeout, stdin=stdin)
        return dataclasses.replace(result, output="0" * 64) if stdin else result

    monkeypatch.setattr(host.console, "run", garbled)
    with pytest.raises(ProvisionError, match=r"^init: /etc/x.conf arrived corrupted over the console"):
        host.write_file("/etc/x.conf", "a = 1")


def test_wait_until_says_what_did_not_happen(host):
    with pytest.raises(
        ProvisionError, match=r"init: the moon did not happen within 0.05s \(last reading: 0\)"
    ):
        host.wait_until("the moon", lambda: 0, bool, timeout=0.05, interval=0.01)


def test_a_timeout_names_the_last_reading_in_words_not_a_repr(host):
    host.console.answers[host.platform.sa_command()] = recorded(host.platform.name, "sa_none")
    with pytest.raises(ProvisionError) as failed:
        host.wait_established(timeout=0.05)
    assert "SaState(" not in str(failed.value)
    assert str(failed.value).endswith("within 0.05s (last reading: no IKE SA)")


def test_wait_established_stops_at_the_line_where_iked_gives_up(host):
    p = host.platform
    host.console.answers[p.sa_command()] = recorded(p.name, "sa_none")
    host.console.answers[p.ike_log_length_command()] = "1\n"
    host.mark_ike_log()
    fatal = "ikev2_msg_auth: authentication failed for FQDN/init.example.com"
    host.console.answers[p.ike_log_since_command(1)] = f"ikev2_recv: IKE_AUTH request\n{fatal}\n"
    start = time.monotonic()
    with pytest.raises(ProvisionError, match=f"^init: iked gave up on the tunnel: {fatal}$"):
        host.wait_established(timeout=30)
    assert time.monotonic() - start < 5


def test_wait_established_reads_until_the_sas_are_up(host):
    host.console.answers[host.platform.sa_command()] = recorded(host.platform.name, "sa_established")
    assert host.wait_established(timeout=1).established


def test_a_capture_is_parsed_saved_and_keeps_the_platforms_notes(host, monkeypatch):
    platform = host.platform
    text = recorded(platform.name, "capture_decapsulated")
    host.console.answers = _capture_answers(host, text)
    noted = lambda output, kind: dataclasses.replace(Capture(packets=(), text=output), notes=["a note"])  # noqa: E731
    monkeypatch.setattr(platform, "parse_capture", noted)
    with host.capture_decapsulated() as box:
        assert box == []
    capture = box[0]
    assert capture.notes == ["a note"] and capture.text == text
    assert capture.pcap and open(capture.pcap, "rb").read() == b"fake pcap"
    stop = platform.capture_stop_command(4242)
    assert stop in host.console.log


def _capture_answers(host, text):
    """The read command carries a random pcap name: answer any `tcpdump -r` with the recording."""

    class Answers(dict):
        def __contains__(self, command):
            return "-r " in command or dict.__contains__(self, command)

        def __getitem__(self, command):
            return text if "-r " in command else dict.__getitem__(self, command)

    return Answers()
