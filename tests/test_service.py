"""`ikedlab iked HOST start|stop|restart|debug`: the platform's commands, in order, and debug always puts the
service back."""

import pytest

from lab import service, topology
from lab.console import Result
from lab.errors import IkedlabError
from lab.platforms import get_platform


class FakeConsole:
    def __init__(self, ran: list[str], interrupt: bool) -> None:
        self.ran, self.interrupt = ran, interrupt

    def stream(self, command, out):
        self.ran.append(f"stream {command}")
        out("ikev2_recv: IKE_SA_INIT request\n")
        if self.interrupt:
            raise KeyboardInterrupt
        return Result(command, 0, "")


class FakeHost:
    def __init__(self, name: str, interrupt: bool = False) -> None:
        self.spec = topology.load(None, ("linux",)).host(name)
        self.name, self.platform, self.ran = name, get_platform("linux"), []
        self.console = FakeConsole(self.ran, interrupt)

    def run(self, command):
        self.ran.append(command)
        return Result(command, 0, "iked(ok)\n")

    def check(self, command):
        return self.run(command)


def test_restart_is_stop_then_start():
    host = FakeHost("init")
    assert service.control(host, "restart", out=lambda text: None) == 0
    assert host.ran == [host.platform.ike_stop_command(), host.platform.ike_start_command()]


def test_debug_streams_iked_dv_and_puts_the_service_back_after_ctrl_c():
    host = FakeHost("resp", interrupt=True)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        service.control(host, "debug", out=said.append)
    p = host.platform
    assert host.ran == [p.ike_stop_command(), f"stream {p.ike_debug_command()}", p.ike_start_command()]
    assert "iked -dv" in said[0] and "IKE_SA_INIT" in "".join(said)


def test_only_gateways_run_iked():
    with pytest.raises(IkedlabError, match="initlan runs no iked"):
        service.control(FakeHost("initlan"), "start", out=lambda text: None)
