"""`ikedlab up --expect-failure PATTERN`, for bug reproducers: the lab is provisioned as usual, and instead of
waiting for the tunnel ikedlab watches both gateways' iked logs (from iked's start on) and succeeds as soon
as one of them says PATTERN — any of iked's fatal lines when no pattern is given — and fails at once if the
tunnel comes up instead. The lab stays up, ready for `ikedlab bundle`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from lab.errors import ProvisionError
from lab.host import Host
from lab.ownership import ikedlab_for
from lab.platforms.parsers import IKED_FATAL, iked_fatal_line
from lab.readings import SaState
from lab.settings import SA_TIMEOUT

ANY_FAILURE = IKED_FATAL


@dataclass(frozen=True)
class Seen:
    host: str
    line: str


class ExpectedFailureMissing(ProvisionError):
    """--expect-failure: the failure did not happen (the tunnel came up, or nothing matched in time)."""


def wait_for_failure(gateways: list[Host], pattern: str, *, lab: str, timeout: float = SA_TIMEOUT) -> Seen:
    """Watch the gateways' iked logs until one matches `pattern`; fail fast when the tunnel comes up.
    `lab` is the lab's name, for the hints."""
    regex = re.compile(pattern)
    again = ikedlab_for(lab)
    deadline = time.monotonic() + timeout
    while True:
        for h in gateways:
            line = iked_fatal_line(h.iked_log(h.ike_log_mark), regex)
            if line:
                return Seen(h.name, line)
        if all(_sas(h).established for h in gateways):
            raise ExpectedFailureMissing(
                f"expected iked to fail with /{pattern}/, but the tunnel came up on every gateway",
                f"`{again} status` shows it; `{again} down` removes the lab",
            )
        if time.monotonic() >= deadline:
            raise ExpectedFailureMissing(
                f"expected iked to fail with /{pattern}/ within {timeout:g}s; no gateway's log says so",
                f"`{again} bundle` packs both iked logs",
            )
        time.sleep(0.5)  # the pace of polling logs, not a guess at how long iked takes


def _sas(h: Host) -> SaState:
    result = h.run(h.platform.sa_command())
    return h.platform.parse_sa(result.output) if result.ok else SaState()
