"""The login banner: who each host is in the guide, its addresses, five commands in its spelling."""

import pytest

from lab import banner, topology
from lab.plan import render_lab
from lab.platforms import FileSpec, get_platform


def guide() -> topology.Topology:
    return topology.load(None, ("linux", "openbsd"))


@pytest.mark.parametrize("platform", ["linux", "openbsd"])
def test_every_host_gets_five_commands_and_its_addresses(platform: str) -> None:
    t = guide()
    dialect = get_platform(platform)
    for host in t.hosts.values():
        text = banner.motd(t, host, dialect)
        assert len(banner.commands(t, host, dialect)) == 5
        for iface in host.interfaces:
            assert f"{dialect.interface_name(iface.index)}" in text and str(iface.address) in text
        assert "{" not in text, "every format field filled in"


def test_gateway_banner_says_its_role_tunnel_and_log() -> None:
    t = guide()
    init = banner.motd(t, t.host("init"), get_platform("openbsd"))
    assert "initiator gateway (iked active, srcid init.example.com)" in init
    assert "tunnel: 10.0.1.0/24 <-> 10.0.2.0/24 with resp (198.51.100.1)" in init
    assert "tcpdump -n -i enc0" in init and "iked's log: /var/log/daemon" in init
    resp = banner.motd(t, t.host("resp"), get_platform("linux"))
    assert "responder gateway" in resp and "tcpdump -n -i nflog:5" in resp and "/var/log/iked.log" in resp


def test_lan_hosts_ping_across_the_tunnel() -> None:
    t = guide()
    assert "ping -c 3 10.0.2.2" in banner.motd(t, t.host("initlan"), get_platform("linux"))
    assert "ping -c 3 10.0.1.2" in banner.motd(t, t.host("resplan"), get_platform("openbsd"))
    assert "the Internet between the two gateways" in banner.motd(t, t.host("inet"), get_platform("linux"))


def test_provisioning_and_render_deliver_it(tmp_path) -> None:
    t = guide()
    spec = banner.motd_file(t, t.host("init"), get_platform("linux"))
    assert isinstance(spec, FileSpec) and spec.path == "/etc/motd"
    render_lab(None, "openbsd", tmp_path)
    assert (
        "resp — the guide's responder gateway" in (tmp_path / "resp" / "files" / "etc" / "motd").read_text()
    )
