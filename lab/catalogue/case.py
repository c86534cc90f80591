"""A case folder, read and checked as outside input: case.yaml, the configuration templates, nothing else.

Case folders travel between people (a bug report turned into a case), so everything in one is checked before
it reaches a path, a template engine or a guest: the folder's name is a plain word, it holds only the files a
case may hold (case.yaml, `*.j2` templates, README.md), each of bounded size; every field of case.yaml is
read strictly (lab.catalogue.steps), and templates are parsed by a sandboxed jinja2 that has no loader (a
template cannot include a file) and renders once against the guide's lab right away, so a misspelt
variable is found at load, not in the middle of a run. Every problem is one line naming the file and field;
all of a file's problems are collected and raised together (CaseError).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import yaml

from lab import gate
from lab.catalogue.context import CaseContext, lab_context
from lab.catalogue.steps import REGEX_CHARS, Problems, Step, read_step
from lab.errors import InputError
from lab.placement import load_topology
from lab.platforms import CAPABILITIES
from lab.topology import Refused, StrictLoader, Topology, load_yaml

CASE_FILE = "case.yaml"
MAX_FILE_BYTES = gate.CASE_FILE_BYTES
TEMPLATE_RE = re.compile(
    r"^(?:(?P<host>[a-z][a-z0-9-]*)\.)?(?P<kind>iked\.conf|swanctl\.conf|ipsec\.conf)\.j2$"
)
OTHER_FILES = ("README.md",)
SECRET_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
PKI_KINDS = ("upstream",)
SETUP_FIELDS = {
    "block_plain_ping": "gateways drop ICMP echo requests that did not come through IPsec (regress pf.in)",
    "ipv6": "every link also gets IPv6 (lab.catalogue.context.ipv6_plan)",
    "daemons": "running (started by the case, the default) or stopped (no IKE daemon at all)",
    "masquerade": "a link whose hosts the router hides behind its own address (NAT)",
    "start_first": "gateways whose daemon starts first (default: the topology's passive ones)",
    "sysctl": "kernel settings in OpenBSD's names, as the regress sets them (each platform's equivalent)",
    "before_start": "commands on hosts once the configurations are written, before the daemons start",
    "iked_flags": "iked's command-line flags on every gateway (the regress's `iked -p 9999`)",
}
TOP_FIELDS = (
    "description", "reference", "secrets", "pki", "setup", "requires", "roles", "known", "steps",
)  # fmt: skip
REFERENCE_FIELDS = ("upstream", "rfc", "bug", "see")


class _CaseLoader(StrictLoader):
    """YAML 1.2's booleans, true and false only: in YAML 1.1 a bare `on` (the steps' `on: init`), `yes`, `no`
    or `off` would be a boolean."""


_BOOL = "tag:yaml.org,2002:bool"
_CaseLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _BOOL]
    for first, resolvers in StrictLoader.yaml_implicit_resolvers.items()
}
_CaseLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def read_yaml(text: str) -> Any:
    """A hand-written file of steps (case.yaml, an exercise's exercise.yaml): YAML 1.2's booleans, a key given
    twice, an alias or bad YAML refused as ValueError saying where."""
    try:
        return load_yaml(text, _CaseLoader)
    except Refused as e:  # a key given twice, an alias
        raise ValueError(str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        raise ValueError(f"{at}not valid YAML: {getattr(e, 'problem', e)}") from None


class CaseError(InputError):
    """Problems in a case folder, each naming the file and the field."""


@dataclass(frozen=True)
class Reference:
    upstream: str = ""  # openiked's regress/live target (without run-)
    rfc: str = ""
    bug: str = ""
    see: str = ""  # anything else: a man page section, a commit

    def describe(self) -> str:
        parts = []
        if self.upstream:
            parts.append(f"openiked regress/live run-{self.upstream}")
        parts += [p for p in (self.rfc, self.bug, self.see) if p]
        return "; ".join(parts)


@dataclass(frozen=True)
class Known:
    """A known failure: on the cells it names, the case is a strict xfail as long as its failure matches."""

    reason: str
    reference: str
    match: str  # a regex the failure's message must match; any other failure stays a failure
    cells: tuple[str, ...] = ("*",)  # cell names or globs (lab.catalogue.cells)

    def applies(self, cell: str) -> bool:
        return any(fnmatch.fnmatchcase(cell, pattern) for pattern in self.cells)

    def describe(self) -> str:
        return f"{self.reason} ({self.reference})"


@dataclass(frozen=True)
class Setup:
    block_plain_ping: bool = False
    ipv6: bool = False
    daemons: str = "running"
    masquerade: str = ""  # a link name
    start_first: tuple[str, ...] = ()  # gateways; () for the topology's passive ones
    sysctl: tuple[tuple[str, str], ...] = ()  # (OpenBSD name, value)
    before_start: tuple[tuple[str, str], ...] = ()  # (host, shell command)
    iked_flags: str = ""


@dataclass(frozen=True)
class PlacedStep:
    where: str  # "steps[3]", for messages
    step: Step


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    description: str
    reference: Reference
    steps: tuple[PlacedStep, ...]
    secrets: tuple[str, ...] = ()
    pki: str = ""
    setup: Setup = Setup()
    requires: tuple[str, ...] = ()
    known: tuple[Known, ...] = ()
    templates: tuple[tuple[str, str], ...] = ()  # (file name, text)
    roles: tuple[tuple[str, str], ...] = ()  # (gateway, who must play it and why), said when a cell cannot

    def template_for(self, gateway: str, conf_format: str) -> tuple[str, str] | None:
        """The template for `gateway`, whose daemon reads `conf_format` (Platform.ike_conf_format: iked.conf,
        swanctl.conf, ipsec.conf): its own (`init.iked.conf.j2`), else the shared one (`iked.conf.j2`)."""
        kind = conf_format
        texts = dict(self.templates)
        for name in (f"{gateway}.{kind}.j2", f"{kind}.j2"):
            if name in texts:
                return name, texts[name]
        return None

    def known_for(self, cell: str) -> list[Known]:
        return [k for k in self.known if k.applies(cell)]


def load_case(folder: Path, topology: Topology | None = None) -> Case:
    """Read and check the case in `folder` against `topology` (the guide's lab when None)."""
    topology = topology or load_topology(None)
    name = folder.name
    if problem := gate.CASE.problem(name):
        raise CaseError([f"{folder}: {problem}"])
    problems = Problems()
    texts: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        shown = f"{name}/{gate.shown(path.name)[1:-1]}"
        if path.is_symlink() or not path.is_file():
            problems.add(shown, "not a plain file (a case folder holds only files)")
            continue
        if path.name != CASE_FILE and not TEMPLATE_RE.fullmatch(path.name) and path.name not in OTHER_FILES:
            problems.add(
                shown, "a case folder holds case.yaml, *.iked.conf.j2-style templates and README.md only"
            )
            continue
        try:
            texts[path.name] = gate.read_text(path, MAX_FILE_BYTES)
        except gate.GateError as e:
            problems.add(shown, e.message)
    if CASE_FILE not in texts:
        if not problems:
            problems.add(f"{name}/{CASE_FILE}", "missing")
        raise CaseError(problems.items)
    case = _read_case_file(folder, texts, topology, problems)
    if case is not None:
        _check_templates(case, topology, problems)
    if problems or case is None:
        raise CaseError(problems.items)
    return case


def _read_case_file(
    folder: Path, texts: dict[str, str], topology: Topology, problems: Problems
) -> Case | None:
    name = folder.name
    where = f"{name}/{CASE_FILE}"
    try:
        data = read_yaml(texts[CASE_FILE])
    except ValueError as e:
        problems.add(where, str(e))
        return None
    if not isinstance(data, dict):
        problems.add(where, "expected a mapping (description, reference, steps, …)")
        return None
    for key in data:
        if key not in TOP_FIELDS:
            problems.add(f"{where}: {gate.key(key)}", f"unknown field (fields: {', '.join(TOP_FIELDS)})")
    hosts = list(topology.hosts)

    def text(value: Any, field: str, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            problems.add(f"{where}: {field}", "expected a text")
            return ""
        return value.strip()

    description = text(data.get("description"), "description")
    reference = Reference()
    raw_ref = data.get("reference")
    if not isinstance(raw_ref, dict) or not raw_ref:
        problems.add(f"{where}: reference", f"expected a mapping with any of {', '.join(REFERENCE_FIELDS)}")
    else:
        for key in raw_ref:
            if key not in REFERENCE_FIELDS:
                problems.add(
                    f"{where}: reference.{gate.key(key)}",
                    f"unknown field (fields: {', '.join(REFERENCE_FIELDS)})",
                )
        reference = Reference(**{k: text(raw_ref.get(k), f"reference.{k}", False) for k in REFERENCE_FIELDS})

    secrets = _word_list(data.get("secrets"), f"{where}: secrets", SECRET_RE, problems)
    pki = data.get("pki") or ""
    if pki and pki not in PKI_KINDS:
        problems.add(f"{where}: pki", f"{gate.shown(pki)} is not one of {', '.join(PKI_KINDS)}")
    setup = _setup(data.get("setup"), f"{where}: setup", topology, problems)
    requires = _word_list(data.get("requires"), f"{where}: requires", re.compile(r"^\w+$"), problems)
    for i, capability in enumerate(requires):
        if capability not in CAPABILITIES:
            problems.add(
                f"{where}: requires[{i}]",
                f"{gate.shown(capability)} is not a capability ({', '.join(CAPABILITIES)})",
            )
    known = _known(data.get("known"), f"{where}: known", problems)
    roles: list[tuple[str, str]] = []
    raw_roles = data.get("roles") or {}
    gateway_names = [g.name for g in topology.gateways]
    if not isinstance(raw_roles, dict):
        problems.add(f"{where}: roles", "expected a mapping of gateway to who must play it and why")
        raw_roles = {}
    for gateway, why in raw_roles.items():
        if gateway not in gateway_names:
            problems.add(f"{where}: roles.{gate.key(gateway)}", f"not a gateway ({', '.join(gateway_names)})")
        elif not isinstance(why, str) or not why.strip():
            problems.add(f"{where}: roles.{gateway}", "expected a text: who must play this role, and why")
        else:
            roles.append((gateway, " ".join(why.split())))

    raw_steps = data.get("steps")
    steps: list[PlacedStep] = []
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.add(f"{where}: steps", "expected a list of steps")
    else:
        for i, raw in enumerate(raw_steps):
            step = read_step(raw, f"{where}: steps[{i}]", problems, hosts)
            if step is not None:
                steps.append(PlacedStep(f"steps[{i}]", step))
    templates = tuple((n, t) for n, t in sorted(texts.items()) if n.endswith(".j2"))
    for n, _ in templates:
        m = TEMPLATE_RE.match(n)
        if m and m["host"] and m["host"] not in {g.name for g in topology.gateways}:
            gateways = ", ".join(g.name for g in topology.gateways)
            problems.add(
                f"{name}/{n}", f"{gate.shown(m['host'])} is not a gateway of the lab (gateways: {gateways})"
            )
    if problems:
        return None
    return Case(
        name=name,
        folder=folder,
        description=description,
        reference=reference,
        steps=tuple(steps),
        secrets=secrets,
        pki=pki,
        setup=setup,
        requires=requires,
        known=known,
        templates=templates,
        roles=tuple(roles),
    )


def _word_list(value: Any, where: str, pattern: re.Pattern[str], problems: Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        problems.add(where, f"expected a list of words matching {pattern.pattern}")
        return ()
    return tuple(value)


def _setup(value: Any, where: str, topology: Topology, problems: Problems) -> Setup:
    if value is None:
        return Setup()
    if not isinstance(value, dict):
        problems.add(where, f"expected a mapping of {', '.join(SETUP_FIELDS)}")
        return Setup()
    for key in value:
        if key not in SETUP_FIELDS:
            problems.add(f"{where}.{gate.key(key)}", f"unknown field (fields: {', '.join(SETUP_FIELDS)})")
    for key in ("block_plain_ping", "ipv6"):
        if key in value and not isinstance(value[key], bool):
            problems.add(f"{where}.{key}", "expected true or false")
    daemons = value.get("daemons", "running")
    if daemons not in ("running", "stopped"):
        problems.add(f"{where}.daemons", f"{gate.shown(daemons)} is not one of running, stopped")
    masquerade = value.get("masquerade", "")
    if masquerade and masquerade not in topology.links:
        problems.add(
            f"{where}.masquerade", f"{gate.shown(masquerade)} is not a link ({', '.join(topology.links)})"
        )
    gateways = [g.name for g in topology.gateways]
    first = value.get("start_first", [])
    if not isinstance(first, list) or not all(g in gateways for g in first):
        problems.add(f"{where}.start_first", f"expected a list of gateways ({', '.join(gateways)})")
        first = []
    sysctl = value.get("sysctl", {})
    if not isinstance(sysctl, dict) or not all(
        isinstance(k, str) and re.fullmatch(r"[a-z0-9_.]+", k) and re.fullmatch(r"[\w.-]+", str(v))
        for k, v in sysctl.items()
    ):
        problems.add(
            f"{where}.sysctl", "expected a mapping of sysctl names to values (net.inet.ipcomp.enable: 1)"
        )
        sysctl = {}
    before: list[tuple[str, str]] = []
    raw_before = value.get("before_start", [])
    if not isinstance(raw_before, list):
        problems.add(f"{where}.before_start", "expected a list of {on: HOST, run: COMMAND}")
        raw_before = []
    for i, entry in enumerate(raw_before):
        at = f"{where}.before_start[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"on", "run"}:
            problems.add(at, "expected {on: HOST, run: COMMAND}")
        elif entry["on"] not in topology.hosts:
            problems.add(
                f"{at}.on",
                f"{gate.shown(entry['on'])} is not a host of the lab ({', '.join(topology.hosts)})",
            )
        elif not isinstance(entry["run"], str) or not entry["run"].strip():
            problems.add(f"{at}.run", "expected a shell command")
        else:
            before.append((entry["on"], entry["run"]))
    flags = value.get("iked_flags", "")
    if not isinstance(flags, str) or not re.fullmatch(r"[-\w. ]*", flags):
        problems.add(f"{where}.iked_flags", "expected iked's flags as words (-p 9999)")
        flags = ""
    return Setup(
        iked_flags=flags,
        before_start=tuple(before),
        start_first=tuple(first),
        sysctl=tuple((k, str(v)) for k, v in sysctl.items()),
        block_plain_ping=value.get("block_plain_ping") is True,
        ipv6=value.get("ipv6") is True,
        daemons=str(daemons),
        masquerade=str(masquerade or ""),
    )


def _known(value: Any, where: str, problems: Problems) -> tuple[Known, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add(where, "expected a list of {reason, reference, match, cells}")
        return ()
    known = []
    for i, entry in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            problems.add(at, "expected a mapping of reason, reference, match, cells")
            continue
        for key in entry:
            if key not in ("reason", "reference", "match", "cells"):
                problems.add(
                    f"{at}.{gate.key(key)}", "unknown field (fields: reason, reference, match, cells)"
                )
        fields = {}
        for key in ("reason", "reference", "match"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                problems.add(
                    f"{at}.{key}", "expected a text (a known failure says why, where, and its words)"
                )
            else:
                fields[key] = " ".join(entry[key].split())
        if "match" in fields:
            try:
                re.compile(fields["match"])
            except re.error as e:
                problems.add(f"{at}.match", f"not a regular expression: {e}")
            if len(fields["match"]) > REGEX_CHARS:
                problems.add(f"{at}.match", f"longer than {REGEX_CHARS} characters")
        cells = entry.get("cells", ["*"])
        if not isinstance(cells, list) or not all(isinstance(c, str) and c for c in cells):
            problems.add(f"{at}.cells", "expected a list of cell names or globs")
            cells = ["*"]
        if len(fields) == 3:
            known.append(Known(fields["reason"], fields["reference"], fields["match"], tuple(cells)))
    return tuple(known)


# --- templates ----------------------------------------------------------------------------------------------


def template_environment() -> jinja2.sandbox.SandboxedEnvironment:
    """Templates from case folders are outside input: a sandbox (no attribute tricks into Python), no loader
    (no file can be included), undefined names are errors."""
    return jinja2.sandbox.SandboxedEnvironment(
        loader=None,
        autoescape=False,  # plain-text configuration files
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(case: Case, name: str, text: str, context: CaseContext, gateway: str, peer: str) -> str:
    """A template of `case` rendered for `gateway` (its peer `peer`); CaseError naming file and line."""
    try:
        out = template_environment().from_string(text).render(context.template_vars(gateway, peer))
    except jinja2.TemplateSyntaxError as e:
        raise CaseError([f"{case.name}/{name}: line {e.lineno}: {e.message}"]) from None
    except (jinja2.UndefinedError, jinja2.sandbox.SecurityError, TypeError, ValueError) as e:
        raise CaseError([f"{case.name}/{name}: {e}"]) from None
    if len(out.encode()) > MAX_FILE_BYTES:
        raise CaseError([f"{case.name}/{name}: renders to more than {MAX_FILE_BYTES // 1024} KiB"])
    return out


def _check_templates(case: Case, topology: Topology, problems: Problems) -> None:
    """Each template rendered once for the guide's lab with stand-in secrets: errors found now."""
    stand_in = {s: f"<{s}>" for s in case.secrets}
    context = lab_context(topology, {}, stand_in, case.name, ipv6=case.setup.ipv6)
    gateways = topology.gateways
    for name, text in case.templates:
        m = TEMPLATE_RE.match(name)
        assert m
        targets = [g for g in gateways if not m["host"] or g.name == m["host"]]
        for gateway in targets:
            try:
                render(case, name, text, context, gateway.name, topology.peer_of(gateway).name)
            except CaseError as e:
                problems.items.extend(e.problems)
                break
