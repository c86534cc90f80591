"""The platform contract: every registered platform, parametrized, passes the same tests of its intents and of
its parsers on output recorded from that platform (tests/fakes.py RECORDED). A new platform is held to it as
soon as it registers: without its recordings, its contract test fails and says which are missing."""

import re

import pytest
from fakes import RECORDED, FakeConsole, recorded

from lab.errors import IkedlabError
from lab.host import Host
from lab.placement import load_topology
from lab.platforms import CAPABILITIES, FileSpec, get_platform, platform_names

GUIDE = load_topology()
READINGS = (
    "sa_established",
    "sa_none",
    "counters_zero",
    "counters_traffic",
    "capture_decapsulated",
    "ping_ok",
    "ping_lost",
)


@pytest.fixture(params=platform_names())
def platform(request):
    name = request.param
    missing = [r for r in READINGS if r not in RECORDED.get(name, {})]
    assert not missing, (
        f"platform {name}: add recorded output to tests/fakes.py RECORDED: {', '.join(missing)}"
    )
    return get_platform(name)


def _text(actions) -> str:
    return "\n".join(a.path + "\n" + a.content if isinstance(a, FileSpec) else a for a in actions)


# --- facts ------------------------------------------------------------------------------------------------
def test_facts_are_complete(platform):
    facts = platform.facts
    assert facts.name == platform.name and facts.description
    assert facts.memory_mib >= 64 and facts.boot in ("kernel", "disk")
    re.compile(platform.login.ready)
    assert set(CAPABILITIES) == facts.capabilities | set(facts.lacks)
    names = [platform.interface_name(i) for i in range(3)]
    assert len(set(names)) == 3 and all(re.fullmatch(r"[a-z]+[0-9]+", n) for n in names)


# --- intents ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", list(GUIDE.hosts))
def test_network_names_every_interface_and_address(platform, host):
    spec = GUIDE.host(host)
    text = _text(platform.network_actions(spec))
    for iface in spec.interfaces:
        assert platform.interface_name(iface.index) in text
        assert str(iface.address.ip) in text
    if spec.gateway:
        assert str(spec.gateway) in text


def test_gateway_commands(platform):
    init = GUIDE.host("init")
    assert platform.ipsec_prepare_actions(init)
    keygen = platform.keygen_command()
    assert platform.private_key in keygen and platform.public_key in keygen
    assert platform.ike_conf in platform.ike_check_command()
    for command in (platform.ike_start_command(), platform.ike_stop_command(), platform.ike_log_command()):
        assert command.strip()
    assert platform.peer_pubkey_path("resp.example.com").endswith("/resp.example.com")


def test_captures_print_their_pid_and_a_wire_capture_needs_an_interface(platform):
    iface = platform.interface_name(0)
    assert platform.capture_start_command("wire", "/tmp/x.pcap", iface).rstrip().endswith("echo $!")
    assert iface in platform.capture_start_command("wire", "/tmp/x.pcap", iface)
    assert platform.capture_start_command("decapsulated", "/tmp/x.pcap").rstrip().endswith("echo $!")
    with pytest.raises((IkedlabError, ValueError)):
        platform.capture_start_command("wire", "/tmp/x.pcap", None)


def test_masquerade_when_capable(platform):
    if not platform.can("masquerade"):
        pytest.skip(platform.why_not("masquerade"))
    assert "10.0.1.0/24" in platform.masquerade_command("10.0.1.0/24", platform.interface_name(1))
    assert platform.unmasquerade_command().strip()


# --- parsers on recorded output ---------------------------------------------------------------------------
def test_no_sas(platform):
    sas = platform.parse_sa(recorded(platform.name, "sa_none"))
    assert not sas.established


def test_established_sas(platform):
    sas = platform.parse_sa(recorded(platform.name, "sa_established"))
    assert sas.established and sas.ike_sas


def test_zero_counters(platform):
    counters = platform.parse_counters(recorded(platform.name, "counters_zero"))
    assert (counters.esp_in, counters.esp_out, counters.ah_in, counters.ah_out) == (0, 0, 0, 0)


def test_counters_after_traffic(platform):
    counters = platform.parse_counters(recorded(platform.name, "counters_traffic"))
    assert counters.esp_in > 0 and counters.esp_out > 0 and counters.esp_in_bytes > 0


def test_decapsulated_capture_shows_the_plaintext_both_ways(platform):
    capture = platform.parse_capture(recorded(platform.name, "capture_decapsulated"), "decapsulated")
    icmp = [(p.src, p.dst) for p in capture.packets if p.protocol == "ICMP"]
    assert ("10.0.1.2", "10.0.2.2") in icmp and ("10.0.2.2", "10.0.1.2") in icmp
    assert isinstance(capture.notes, list)


def test_ping(platform):
    ok, lost = (platform.parse_ping(recorded(platform.name, r)) for r in ("ping_ok", "ping_lost"))
    assert ok.transmitted > 0 and ok.received == ok.transmitted
    assert lost.received < lost.transmitted


# --- the same through a Host on a fake console ------------------------------------------------------------
def test_host_readings_go_through_the_platform(platform, tmp_path):
    spec = GUIDE.host("init")
    console = FakeConsole(
        "init",
        platform,
        {
            platform.sa_command(): recorded(platform.name, "sa_established"),
            platform.counters_command(spec): recorded(platform.name, "counters_zero"),
        },
    )
    host = Host(spec, platform, console, tmp_path)  # type: ignore[arg-type]
    assert host.sas().established
    assert host.ipsec_counters().esp_in == 0
    assert host.interface("wan1") == platform.interface_name(spec.interface_on("wan1").index)
