"""Typed errors. Library code raises these; only the CLI turns them into one line and an exit code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class IkedlabError(Exception):
    """An error a user can act on: a one-line message, further problems of the same kind each on a line of
    their own (`details`), and an optional hint saying what to do."""

    def __init__(self, message: str, hint: str | None = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = tuple(details)

    def __str__(self) -> str:
        return self.message

    def lines(self, program: str = "ikedlab") -> list[str]:
        """What a person reads: the message, one line per further problem, the hint."""
        return [
            f"{program}: {self.message}",
            *(f"  - {d}" for d in self.details),
            *([f"hint: {self.hint}"] if self.hint else []),
        ]


def first_and_more(problems: Sequence[str]) -> tuple[str, list[str]]:
    """Several problems as one error: the first, saying how many more follow, and the others."""
    more = len(problems) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return problems[0] + suffix, list(problems[1:])


class InputError(IkedlabError):
    """Every problem found in what a user gave (files, options), collected before anything starts: the
    first is the message, each other one a line of its own. Each problem names its file and field or line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        message, others = first_and_more(problems)
        super().__init__(message, details=others)


class TopologyError(InputError):
    """One or more problems in a topology file, each naming the file and the field."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        super().__init__([f"{self.path.name}: {p}" for p in problems])
        self.problems = problems  # as the validator found them, without the file name


class IkedConfError(InputError):
    """A user's iked.conf (`--iked-conf HOST=FILE`) names no gateway, cannot be read, or iked rejects it."""


class PlatformError(IkedlabError):
    """A platform's data file (lab/platforms/NAME.yaml) is missing a fact or states a wrong one."""


class SettingsError(IkedlabError):
    """An environment variable ikedlab reads holds a value it cannot use."""


class CommandFailed(IkedlabError):
    """A host-side program (qemu-img, apt-get, ...) failed."""


class HypervisorError(IkedlabError):
    """libvirt or QEMU could not do what the lab needs."""


class ImageError(IkedlabError):
    """A golden image is missing or could not be built."""


class ConsoleError(IkedlabError):
    """A serial console did not behave as expected."""


class ConsoleTimeout(ConsoleError):
    """Waited for something on a console and it did not come."""

    def __init__(
        self, host: str, waiting_for: str, seconds: float, tail: str, transcript: Path | None
    ) -> None:
        self.host, self.waiting_for, self.seconds, self.tail, self.transcript = (
            host,
            waiting_for,
            seconds,
            tail,
            transcript,
        )
        last = " | ".join(line for line in tail.strip().splitlines()[-3:]) or "nothing"
        where = f"; transcript: {transcript}" if transcript else ""
        super().__init__(
            f"{host}: no {waiting_for} within {seconds:g}s (last output: {last}){where}",
        )


class ConsoleBusy(ConsoleError):
    """Another ikedlab process holds a guest's control console."""

    def __init__(self, host: str, holder: str) -> None:
        self.host, self.holder = host, holder
        super().__init__(f"{host}: the control console is in use by {holder}")


class CommandError(ConsoleError):
    """A command run in a guest exited non-zero where success was required."""

    def __init__(self, host: str, command: str, status: int, output: str, transcript: Path | None) -> None:
        self.host, self.command, self.status, self.output = host, command, status, output
        last = " | ".join(output.strip().splitlines()[-3:]) or "no output"
        where = f"; transcript: {transcript}" if transcript else ""
        super().__init__(f"{host}: `{command}` exited {status}: {last}{where}")


class ParseError(IkedlabError):
    """Command output did not have the shape its parser expects."""


class ProvisionError(IkedlabError):
    """Provisioning could not reach the state the topology asks for."""


class LabError(IkedlabError):
    """A lab-level problem: unknown lab, unknown host, already running."""


class SnapshotError(IkedlabError):
    """A warm snapshot is missing, stale, corrupt, or could not be saved or restored."""


class SnapshotNotSaved(SnapshotError):
    """Saving a warm snapshot failed (a full disk); the guests were brought back running, as they were cut."""
