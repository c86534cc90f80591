"""The catalogue's readings and judges on recorded output: the kernel's SAs and flows as each platform prints
them, a wrong expectation failing with the host, the command and what was expected, and a case that leaves
an SA behind failing with what it left (tests/data/linux/catalogue/README.md says where each recording is
from)."""

from pathlib import Path

import pytest
from fakes import FakeConsole

from lab.catalogue import steps as s
from lab.catalogue.context import lab_context
from lab.catalogue.judge import CheckFailed, Stage, run_step
from lab.catalogue.leftovers import Baseline, LeftoverFound, check_health, stop_and_check_leftovers
from lab.host import Host
from lab.placement import load_topology
from lab.platforms import get_platform
from lab.platforms.kernel_state import parse_ip_xfrm, parse_ipsecctl_kernel
from lab.readings import KernelState

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "linux" / "catalogue"
GUIDE = load_topology()
LINUX = get_platform("linux")


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def test_linux_kernel_state_reads_sas_with_their_algorithms_and_flows_without_socket_policies():
    state = parse_ip_xfrm(recorded("kernel-guide-established-init.txt"))
    assert {(sa.protocol, sa.mode, sa.src, sa.dst, sa.enc, sa.auth, sa.larval) for sa in state.sas} == {
        ("esp", "tunnel", "198.51.100.1", "192.0.2.1", "aes-256", "hmac-sha2-384", False),
        ("esp", "tunnel", "192.0.2.1", "198.51.100.1", "aes-256", "hmac-sha2-384", False),
    }
    flows = {(p.direction, p.src, p.dst, p.protocol, p.mode, p.peer) for p in state.policies}
    assert ("out", "10.0.1.0/24", "10.0.2.0/24", "esp", "tunnel", "198.51.100.1") in flows
    assert ("in", "10.0.2.0/24", "10.0.1.0/24", "esp", "tunnel", "198.51.100.1") in flows
    assert ("fwd", "10.0.2.0/24", "10.0.1.0/24", "esp", "tunnel", "198.51.100.1") in flows
    assert len(state.policies) == 6, "iked's eight socket policies are no flows"
    assert "0x[key]" not in str(state) and "key" not in state.describe()


def test_a_transport_flows_peer_is_its_far_host():
    state = parse_ip_xfrm(recorded("kernel-transport-init.txt"))
    assert {(sa.mode, sa.protocol) for sa in state.sas} == {("transport", "esp")}
    flows = {(p.direction, p.src, p.dst, p.mode, p.peer) for p in state.policies}
    assert ("out", "192.0.2.1/32", "198.51.100.1/32", "transport", "198.51.100.1") in flows
    assert ("in", "198.51.100.1/32", "192.0.2.1/32", "transport", "198.51.100.1") in flows


def test_a_reserved_spi_without_keys_is_larval():
    state = parse_ip_xfrm(recorded("kernel-larval-left-init.txt"))
    (sa,) = state.sas
    assert sa.larval and (sa.protocol, sa.mode, sa.spi) == ("esp", "transport", 0xD56B8E72)
    assert sa.describe() == "esp transport 198.51.100.1 -> 192.0.2.1 spi 0xd56b8e72 (larval: no keys)"
    assert not state.policies


def test_an_emptied_kernel_is_empty_and_a_stray_output_is_refused():
    assert parse_ip_xfrm(recorded("kernel-empty.txt")).empty
    from lab.errors import ParseError

    with pytest.raises(ParseError, match="not the kernel state command's output"):
        parse_ip_xfrm("RTNETLINK answers: Operation not permitted\n")


def test_openbsd_ipsecctl_gives_every_flow_and_sa():
    state = parse_ipsecctl_kernel((DATA / "openbsd" / "ipsecctl_sa.txt").read_text())
    assert state.sas and state.policies
    assert all(p.direction in ("in", "out") and p.protocol == "esp" for p in state.policies)
    assert all("/" in p.src for p in state.policies if p.src != "any")
    assert parse_ipsecctl_kernel((DATA / "openbsd" / "ipsecctl_sa_empty.txt").read_text()).empty


def test_the_leftover_is_what_the_baseline_lacks():
    established = parse_ip_xfrm(recorded("kernel-guide-established-init.txt"))
    assert established.beyond(established).empty
    left = established.beyond(KernelState())
    assert len(left.sas) == 2 and len(left.policies) == 6


# --- judges on a fake host --------------------------------------------------------------------------------


def fake_hosts(tmp_path: Path, answers: dict[str, dict[str, str]]) -> dict[str, Host]:
    hosts = {}
    for name in ("init", "resp"):
        console = FakeConsole(name, LINUX, answers=answers.get(name, {}))
        hosts[name] = Host(GUIDE.host(name), LINUX, console, tmp_path)  # type: ignore[arg-type]
    return hosts


def stage(hosts: dict[str, Host]) -> Stage:
    return Stage(hosts, lab_context(GUIDE, {"init": "linux", "resp": "linux"}), ["init", "resp"])


def test_a_wrong_expectation_fails_naming_host_command_and_what_was_expected(tmp_path):
    kernel = {LINUX.kernel_state_command(): recorded("kernel-guide-established-init.txt")}
    hosts = fake_hosts(tmp_path, {"init": kernel})
    wrong = s.ChildSaCheck(on=("init",), between=("gateways",), protocol="esp", mode="transport")
    with pytest.raises(CheckFailed) as failed:
        run_step(stage(hosts), "steps[3]", wrong)
    message = str(failed.value)
    assert message.startswith(
        f"steps[3]: init: `{LINUX.kernel_state_command()}`: expected an SA esp transport "
    )
    assert "found esp tunnel 198.51.100.1 -> 192.0.2.1 spi 0x" in message
    assert (failed.value.host, failed.value.expected) == (
        "init",
        "an SA esp transport 192.0.2.1 -> 198.51.100.1",
    )
    right = s.ChildSaCheck(on=("init",), between=("gateways",), protocol="esp", mode="tunnel", enc="aes-256")
    run_step(stage(hosts), "steps[3]", right)  # the same reading holds the right expectation


def test_a_flow_expected_absent_fails_naming_the_flow_found(tmp_path):
    kernel = {LINUX.kernel_state_command(): recorded("kernel-guide-established-init.txt")}
    hosts = fake_hosts(tmp_path, {"init": kernel})
    run_step(stage(hosts), "steps[1]", s.FlowCheck(on=("init",), src="init.lan", dst="resp.lan", peer="resp"))
    with pytest.raises(
        CheckFailed, match=r"^steps\[2\]: init: .*expected no flow out from 10\.0\.1\.0/24 to "
    ):
        run_step(
            stage(hosts), "steps[2]", s.FlowCheck(on=("init",), src="init.lan", dst="resp.lan", absent=True)
        )


def test_a_case_that_leaves_an_sa_behind_fails_saying_what_and_where(tmp_path):
    # init's kernel after its iked stopped still holds the tunnel's SAs and flows (recorded with iked up).
    kernel = LINUX.kernel_state_command()
    hosts = fake_hosts(
        tmp_path,
        {
            "init": {kernel: recorded("kernel-guide-established-init.txt")},
            "resp": {kernel: recorded("kernel-empty.txt")},
        },
    )
    empty = parse_ip_xfrm(recorded("kernel-empty.txt"))
    baseline = Baseline({"init": empty, "resp": empty}, {"init": set(), "resp": set()})
    with pytest.raises(LeftoverFound) as failed:
        stop_and_check_leftovers(list(hosts.values()), baseline)
    message = str(failed.value)
    assert message.startswith(
        f"left in the kernel after the IKE daemons stopped: init (`{kernel}`): esp tunnel "
    )
    assert "flow esp out from 10.0.1.0/24 to 10.0.2.0/24 peer 198.51.100.1 tunnel" in message
    assert "resp" not in message.split(": init", 1)[1], "resp left nothing"
    assert LINUX.ike_stop_command() in hosts["init"].console.log, "the daemons are stopped first"


def test_an_spi_iked_reserved_and_never_keyed_is_its_known_leak_said_not_failed(tmp_path):
    kernel = LINUX.kernel_state_command()
    hosts = fake_hosts(
        tmp_path,
        {
            "init": {kernel: recorded("kernel-larval-left-init.txt")},
            "resp": {kernel: recorded("kernel-empty.txt")},
        },
    )
    empty = parse_ip_xfrm(recorded("kernel-empty.txt"))
    baseline = Baseline({"init": empty, "resp": empty}, {"init": set(), "resp": set()})
    (said,) = stop_and_check_leftovers(list(hosts.values()), baseline)
    assert said.startswith("init: esp transport 198.51.100.1 -> 192.0.2.1 spi 0xd56b8e72 (larval: no keys)")
    assert "config_free_childsas" in said


def test_a_dead_daemon_or_a_crash_fails_the_case(tmp_path):
    hosts = fake_hosts(
        tmp_path, {"resp": {LINUX.ike_log_command(): "ikev2: lost child: ikev2 terminated; signal 11\n"}}
    )
    hosts["init"].console.failing.add(LINUX.ike_running_command())  # type: ignore[attr-defined]
    baseline = Baseline({}, {"init": set(), "resp": set()})
    with pytest.raises(LeftoverFound) as failed:
        check_health(list(hosts.values()), baseline, daemons_started=True)
    assert "init: the IKE daemon no longer runs" in str(failed.value)
    assert (
        "resp: the daemon's log says a process died: ikev2: lost child: ikev2 terminated; signal 11"
        in str(failed.value)
    )


@pytest.mark.parametrize(
    "name", ["net.inet.ipcomp.enable", "net.inet.esp.udpencap_port", "net.ipv4.ip_forward"]
)
def test_openbsds_sysctls_become_shell_commands_on_linux(name):
    import shutil
    import subprocess

    command = LINUX.sysctl_command(name, "1")
    shell = shutil.which("busybox")
    if name.startswith("net.inet.") and shell:  # nothing to set: a no-op the shell must parse
        assert subprocess.run([shell, "sh", "-n", "-c", command]).returncode == 0, command
        assert "nothing to set on Linux" in command
    elif not name.startswith("net.inet."):
        assert command == f"/usr/bin/busybox sysctl -w {name}=1"


class CapturingConsole(FakeConsole):
    """A fake console whose tcpdump reads and pings print what the lab printed (recordings named below)."""

    def _answer(self, command: str) -> str:
        if command.startswith("tcpdump -n -r "):
            return recorded("tcpdump-wire-natt-inet.txt")
        if command.startswith("ping "):
            return (DATA / "linux" / "ping-busybox.txt").read_text()
        return super()._answer(command)


def test_a_capture_judges_the_pings_family_only(tmp_path):
    """NAT-T on wan2 (iked 7.4's guide-nat): ESP in UDP 4500 and no ICMP, although a guest's IPv6 router
    solicitation crossed the link meanwhile (it failed the case before)."""
    hosts = {
        name: Host(GUIDE.host(name), LINUX, CapturingConsole(name, LINUX), tmp_path)  # type: ignore[arg-type]
        for name in ("inet", "initlan", "init", "resp")
    }
    good = s.Capture(
        link="wan2",
        at="inet",
        ping_from="initlan",
        ping_to="resplan",
        has=("ESP",),
        lacks=("ICMP",),
        udp_port=4500,
    )
    run_step(stage(hosts), "steps[4]", good)
    bad = s.Capture(
        link="wan2", at="inet", ping_from="initlan", ping_to="resplan", has=("ESP",), udp_port=500
    )
    with pytest.raises(
        CheckFailed, match=r"^steps\[4\]: inet: `tcpdump -n -i eth1`: expected ESP in UDP port 500"
    ):
        run_step(stage(hosts), "steps[4]", bad)
