"""iked as a learner drives it on one gateway: start, stop, restart, and `debug`, the guide's first step.

`debug` stops the service, runs `iked -dv` in the foreground and streams what it says to the caller's
terminal; leaving it (Ctrl-C) stops that iked and starts the service again, so the lab is as it was.
Every action is the platform's own (on the Linux appliance: its rcctl, the one way iked runs there).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from lab.console import Result
from lab.errors import IkedlabError
from lab.host import Host

ACTIONS = ("start", "stop", "restart", "debug")


def control(host: Host, action: str, out: Callable[[str], object] | None = None) -> int:
    """Do `action` to iked on `host`, telling `out` (standard output) what happens; returns an exit status."""
    out = out or _print
    if not host.spec.ipsec:
        raise IkedlabError(f"{host.name} runs no iked: it is not an IPsec gateway in this lab")
    platform = host.platform
    if action == "start":
        return _report(host.run(platform.ike_start_command()), out)
    if action == "stop":
        return _report(host.run(platform.ike_stop_command()), out)
    if action == "restart":
        stopped = _report(host.run(platform.ike_stop_command()), out)
        return stopped or _report(host.run(platform.ike_start_command()), out)
    if action == "debug":
        return debug(host, out)
    raise IkedlabError(f"iked: unknown action '{action}' (expected {', '.join(ACTIONS)})")


def debug(host: Host, out: Callable[[str], object]) -> int:
    platform = host.platform
    host.check(platform.ike_stop_command())
    command = platform.ike_debug_command()
    out(f"{host.name}# {command}\n")
    out("(iked in the foreground; leave with Ctrl-C, and iked runs as a service again)\n")
    try:
        host.console.stream(command, out)
    finally:
        restarted = host.run(platform.ike_start_command())
        out(f"\n{host.name}: iked runs as a service again\n" if restarted.ok else restarted.output)
    return 0 if restarted.ok else restarted.status


def _report(result: Result, out: Callable[[str], object]) -> int:
    out(result.output)
    return result.status


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # debug streams: the learner sees each line as iked writes it
