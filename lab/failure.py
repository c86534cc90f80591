"""What iked says when a tunnel does not come up: the line worth reporting, and waiting for an expected one.

Bug reproducers run `ikedlab up --expect-failure PATTERN`: the lab is provisioned as usual, and instead of
waiting for the tunnel, ikedlab watches both gateways' iked logs and succeeds as soon as one of them says
PATTERN (and fails at once if the tunnel comes up instead). The lab stays up, ready for `ikedlab bundle`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from lab.errors import IkedlabError, ProvisionError
from lab.host import Host
from lab.readings import SaState

#: Lines of iked's log that say why a tunnel failed (iked's own words, on both platforms).
FAILURE_LINE = re.compile(
    r"authentication failed|no proposal chosen|NO_PROPOSAL_CHOSEN|AUTHENTICATION_FAILED|"
    r"INVALID_KE_PAYLOAD|TS_UNACCEPTABLE|unsupported|invalid|failed|error|refused|rejects",
    re.IGNORECASE,
)
#: The default of `--expect-failure` without a pattern: any of the failures above.
ANY_FAILURE = FAILURE_LINE.pattern
EXPECT_TIMEOUT = 90.0


@dataclass(frozen=True)
class Seen:
    host: str
    line: str


class ExpectedFailureMissing(ProvisionError):
    """--expect-failure: the failure did not happen (the tunnel came up, or nothing matched in time)."""


def error_line(log: str, pattern: re.Pattern[str] = FAILURE_LINE) -> str | None:
    """The last line of an iked log that matches `pattern`, stripped; None when there is none."""
    lines = [line.strip() for line in log.splitlines() if pattern.search(line)]
    return lines[-1] if lines else None


def log_marks(gateways: list[Host]) -> dict[str, int]:
    """Where each gateway's iked log ends now: later lines are what a change caused."""
    return {h.name: len(h.iked_log()) for h in gateways}


def new_error(gateways: list[Host], marks: dict[str, int]) -> Seen | None:
    """The first gateway whose log gained a failure line since `marks`."""
    for h in gateways:
        line = error_line(h.iked_log()[marks.get(h.name, 0) :])
        if line:
            return Seen(h.name, line)
    return None


def explain(error: IkedlabError, gateways: list[Host], marks: dict[str, int]) -> IkedlabError:
    """A tunnel wait that failed, told with iked's own error line when its log has one."""
    try:
        seen = new_error(gateways, marks)
    except IkedlabError:
        seen = None
    if seen is None:
        return error
    return ProvisionError(f"{seen.host}: iked says: {seen.line}", error.message)


def wait_for_failure(gateways: list[Host], pattern: str, timeout: float = EXPECT_TIMEOUT) -> Seen:
    """Watch the gateways' iked logs until one matches `pattern`; fail fast when the tunnel comes up."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for h in gateways:
            line = error_line(h.iked_log(), regex)
            if line:
                return Seen(h.name, line)
        states = [_sas(h) for h in gateways]
        if all(s.established for s in states):
            raise ExpectedFailureMissing(
                f"expected iked to fail with /{pattern}/, but the tunnel came up on every gateway",
                "`ikedlab status` shows it; `ikedlab down` removes the lab",
            )
        if time.monotonic() >= deadline:
            raise ExpectedFailureMissing(
                f"expected iked to fail with /{pattern}/ within {timeout:g}s; no gateway's log says so",
                "the logs: `ikedlab exec resp -- cat /var/log/iked.log` (Linux), or `ikedlab bundle`",
            )
        time.sleep(0.5)  # the pace of polling logs, not a guess at how long iked takes


def _sas(h: Host) -> SaState:
    result = h.run(h.platform.sa_command())
    return h.platform.parse_sa(result.output) if result.ok else SaState()
