"""The steps exercises are written in: a strict subset of the catalogue's vocabulary, until it lands on main.

The catalogue (issue 20, lab/catalogue/steps.py and judge.py, not on main when exercises were written) gives
every step type, its fields and its judge. Exercises need five of them, and this module is those five with
the catalogue's spelling, fields, defaults and messages, and its API (Problems, read_step, Stage, run_step,
CheckFailed), so that an exercise.yaml needs no change when this module gives way to the catalogue's:

    tunnel     state established|none, on (gateways), within (90)
    ike_sa     on (gateways), state (ESTABLISHED), count (>= 1), flags (natt)
    ping       from, to, count (5), replies (all|none|some|any)
    run        command, on (gateways), status (ok|fail|any), output (a regex)
    restart    on: the IKE daemon stopped and started again, passive gateways first

Where a field names hosts, `gateways` means every IPsec gateway of the lab; an address is a host's name (a
gateway's public address, another host's first) or a literal.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

import yaml

from lab.errors import IkedlabError, ProvisionError
from lab.host import Host
from lab.parallel import in_parallel
from lab.provision import start_ike, stop_ike
from lab.readings import SaState
from lab.settings import COMMAND, PING_SLACK
from lab.topology import Refused, StrictLoader, Topology, load_yaml

COMPARISON = re.compile(r"^\s*(>=|<=|==|>|<)\s*(\d+)\s*$")


# --- reading ------------------------------------------------------------------------------------------------


class _Loader(StrictLoader):
    """YAML 1.2's booleans, true and false only: in YAML 1.1 a bare `on` (the steps' `on: init`), `yes`, `no`
    or `off` would be a boolean."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _BOOL]
    for first, resolvers in StrictLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def read_yaml(text: str) -> Any:
    """A hand-written YAML file: a key given twice, an alias or bad YAML is ValueError saying where."""
    try:
        return load_yaml(text, _Loader)
    except Refused as e:
        raise ValueError(str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        raise ValueError(f"{at}not valid YAML: {getattr(e, 'problem', None) or e}") from None


class Problems:
    """Problems found while reading one file, each `where: message`, raised together by the caller."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)


Reader = Callable[[Any, str, Problems, frozenset[str]], Any]


def _host(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if not isinstance(value, str) or value not in hosts:
        problems.add(where, f"{value!r} is not a host of the lab (hosts: {', '.join(sorted(hosts))})")
        return None
    return value


def _hosts(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> tuple[str, ...] | None:
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.add(where, "expected a host, a list of hosts, or gateways")
        return None
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        if item == "gateways" or _host(item, at, problems, hosts) is not None:
            out.append(item)
    return tuple(out) if len(out) == len(items) else None


def _address(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if isinstance(value, str) and value in hosts:
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        problems.add(
            where, f"{value!r} is neither a host of the lab ({', '.join(sorted(hosts))}) nor an address"
        )
        return None
    return str(value)


def _regex(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(where, "expected a regular expression")
        return None
    try:
        re.compile(value)
    except re.error as e:
        problems.add(where, f"{value!r} is not a regular expression: {e}")
        return None
    return value


def _plain(kind: type, label: str) -> Reader:
    def read(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (isinstance(value, int | float) and value < 0)
        ):
            problems.add(where, f"expected {label}, not {value!r}")
            return None
        return value

    return read


def _choice(*choices: str) -> Reader:
    def read(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
        if value not in choices:
            problems.add(where, f"{value!r} is not one of {', '.join(choices)}")
            return None
        return str(value)

    return read


def _words(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> tuple[str, ...] | None:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) and i for i in items):
        problems.add(where, "expected a word or a list of words")
        return None
    return tuple(items)


def _comparison(value: Any, where: str, problems: Problems, hosts: frozenset[str]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"== {value}"
    if not isinstance(value, str) or not COMPARISON.match(value):
        problems.add(where, f"expected a comparison such as '>= 5' or '== 0', not {value!r}")
        return None
    return value


def spec(read: Reader, default: Any = MISSING) -> Any:
    """A step field: how it is read and its default (none: required)."""
    return field(default=default, metadata={"read": read})


INT, SECONDS, TEXT = (
    _plain(int, "a whole number"),
    _plain(float, "a number of seconds"),
    _plain(str, "a text"),
)


@dataclass(frozen=True)
class Step:
    TYPE: ClassVar[str] = ""
    MAIN: ClassVar[str] = ""  # the field a bare value fills (`tunnel: established`)


@dataclass(frozen=True)
class Tunnel(Step):
    TYPE, MAIN = "tunnel", "state"
    state: str = spec(_choice("established", "none"))
    on: tuple[str, ...] = spec(_hosts, ("gateways",))
    within: float = spec(SECONDS, 90.0)


@dataclass(frozen=True)
class IkeSaCheck(Step):
    TYPE = "ike_sa"
    on: tuple[str, ...] = spec(_hosts, ("gateways",))
    state: str = spec(TEXT, "ESTABLISHED")
    count: str = spec(_comparison, ">= 1")
    flags: tuple[str, ...] = spec(_words, ())


@dataclass(frozen=True)
class Ping(Step):
    TYPE = "ping"
    src: str = spec(_host)
    dst: str = spec(_address)
    count: int = spec(INT, 5)
    replies: str = spec(_choice("all", "none", "some", "any"), "all")


@dataclass(frozen=True)
class Run(Step):
    TYPE, MAIN = "run", "command"
    command: str = spec(TEXT)
    on: tuple[str, ...] = spec(_hosts, ("gateways",))
    status: str = spec(_choice("ok", "fail", "any"), "ok")
    output: str = spec(_regex, "")


@dataclass(frozen=True)
class Restart(Step):
    TYPE, MAIN = "restart", "on"
    on: tuple[str, ...] = spec(_hosts)


STEP_TYPES: dict[str, type[Step]] = {c.TYPE: c for c in (Tunnel, IkeSaCheck, Ping, Run, Restart)}
YAML_NAMES = {"src": "from", "dst": "to"}


def read_step(raw: Any, where: str, problems: Problems, hosts: Iterable[str]) -> Step | None:
    """One step, or None with its problems added."""
    known = frozenset(hosts)
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.add(
            where, f"a step is one mapping of a step type to its fields (types: {', '.join(STEP_TYPES)})"
        )
        return None
    ((kind, value),) = raw.items()
    cls = STEP_TYPES.get(kind)
    if cls is None:
        problems.add(where, f"unknown step type {kind!r} (types: {', '.join(STEP_TYPES)})")
        return None
    where = f"{where}.{kind}"
    if not isinstance(value, dict):
        if not cls.MAIN:
            problems.add(where, "expected a mapping of fields")
            return None
        value = {cls.MAIN: value}
    names = {YAML_NAMES.get(f.name, f.name): f for f in dataclasses.fields(cls) if "read" in f.metadata}
    before = len(problems.items)
    for key in value:
        if key not in names:
            problems.add(f"{where}.{key}", f"unknown field (fields: {', '.join(names)})")
    args: dict[str, Any] = {}
    for name, f in names.items():
        if name not in value:
            if f.default is MISSING:
                problems.add(f"{where}.{name}", "missing (required)")
            continue
        typed = f.metadata["read"](value[name], f"{where}.{name}", problems, known)
        if typed is not None:
            args[f.name] = typed
    return None if len(problems.items) > before else cls(**args)


def hosts_of(step: Step) -> list[str]:
    """The hosts a step acts on or reads (`gateways` as written), from its host fields."""
    names: list[str] = []
    for f in dataclasses.fields(step):
        if f.metadata.get("read") in (_host, _hosts):
            value = getattr(step, f.name)
            names += [v for v in (value if isinstance(value, tuple) else (value,)) if v not in names]
    return names


def compare(comparison: str, value: int) -> bool:
    m = COMPARISON.match(comparison)
    assert m, comparison
    number = int(m.group(2))
    return {">=": value >= number, "<=": value <= number, "==": value == number, ">": value > number,
            "<": value < number}[m.group(1)]  # fmt: skip


# --- judging ------------------------------------------------------------------------------------------------


class CheckFailed(IkedlabError):
    """A step did not hold (or an action failed): where, on which host, what was read with which command,
    what was expected and what was found."""

    def __init__(self, where: str, host: str, command: str, expected: str, found: str) -> None:
        self.where, self.host, self.command, self.expected, self.found = where, host, command, expected, found
        super().__init__(f"{where}: {host}: `{command}`: expected {expected}; found {found}")


@dataclass
class Stage:
    """What steps act on: the lab's hosts (attached), its topology, its gateways."""

    hosts: dict[str, Host]
    topology: Topology
    gateways: list[str]

    def targets(self, on: tuple[str, ...]) -> list[Host]:
        names: list[str] = []
        for name in on:
            for one in self.gateways if name == "gateways" else [name]:
                if one not in names:
                    names.append(one)
        return [self.hosts[n] for n in names]

    def address(self, expression: str) -> str:
        host = self.topology.hosts.get(expression)
        return str(host.uplink.address.ip) if host else expression


def run_step(stage: Stage, where: str, step: Step) -> None:
    RUNNERS[type(step)](stage, where, step)


def _read_sas(host: Host) -> tuple[str, SaState]:
    command = host.platform.sa_command()
    result = host.run(command)
    return command, host.platform.parse_sa(result.output) if result.ok else SaState()


def _tunnel(stage: Stage, where: str, step: Tunnel) -> None:
    hosts = stage.targets(step.on)
    if step.state == "established":
        failed = threading.Event()
        deadline = time.monotonic() + step.within

        def wait(h: Host) -> None:
            try:
                state = h.wait_established(max(1.0, deadline - time.monotonic()), stop=failed)
            except ProvisionError as e:
                failed.set()
                raise CheckFailed(
                    where,
                    h.name,
                    h.platform.sa_command(),
                    f"an ESTABLISHED IKE SA with child SAs both ways within {step.within:g}s",
                    e.message.removeprefix(f"{h.name}: "),
                ) from None
            if not state.established:  # another host's failure ended this wait early
                raise CheckFailed(
                    where, h.name, h.platform.sa_command(), "an ESTABLISHED IKE SA", state.describe()
                )

        in_parallel(hosts, wait)
        return
    for h in hosts:
        command, state = _read_sas(h)
        if any(i.state == "ESTABLISHED" for i in state.ike_sas) or state.child_sas:
            raise CheckFailed(
                where, h.name, command, "no established IKE SA and no child SA", state.describe()
            )


def _ike_sa(stage: Stage, where: str, step: IkeSaCheck) -> None:
    natt = bool({"natt", "udpencap"} & set(step.flags))
    for h in stage.targets(step.on):
        command, state = _read_sas(h)
        matching = [i for i in state.ike_sas if step.state in ("any", i.state) and (not natt or i.natt)]
        if not compare(step.count, len(matching)):
            found = "; ".join(f"{i.state} {i.peer}{' natt' if i.natt else ''}" for i in state.ike_sas)
            wanted = f"{step.count} IKE SA(s) {step.state}{' with NAT-T' if natt else ''}"
            raise CheckFailed(where, h.name, command, wanted, found or "none")


def _ping(stage: Stage, where: str, step: Ping) -> None:
    source = stage.hosts[step.src]
    target = stage.address(step.dst)
    command = source.platform.ping_command(target, step.count, 2)
    result = source.platform.parse_ping(source.run(command, timeout=step.count * 2 + PING_SLACK).output)
    ok = {
        "all": result.received == step.count,
        "none": result.received == 0,
        "some": result.received > 0,
        "any": True,
    }[step.replies]
    if not ok:
        raise CheckFailed(
            where,
            source.name,
            command,
            f"{step.replies} replies",
            f"{result.received} of {result.transmitted}",
        )


def _run(stage: Stage, where: str, step: Run) -> None:
    for h in stage.targets(step.on):
        result = h.run(step.command, timeout=COMMAND)
        last = " | ".join(result.output.strip().splitlines()[-3:]) or "no output"
        if step.status == "ok" and not result.ok:
            raise CheckFailed(where, h.name, step.command, "exit status 0", f"exit {result.status}: {last}")
        if step.status == "fail" and result.ok:
            raise CheckFailed(where, h.name, step.command, "a non-zero exit status", f"exit 0: {last}")
        if step.output and not re.search(step.output, result.output):
            raise CheckFailed(where, h.name, step.command, f"output matching /{step.output}/", last)


def _restart(stage: Stage, where: str, step: Restart) -> None:
    hosts = stage.targets(step.on)
    stop_ike(hosts)
    start_ike(hosts)


RUNNERS: dict[type[Step], Callable[[Stage, str, Any], None]] = {
    Tunnel: _tunnel,
    IkeSaCheck: _ike_sa,
    Ping: _ping,
    Run: _run,
    Restart: _restart,
}
