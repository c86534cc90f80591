"""An exercise folder, read and checked as outside input: exercise.yaml and an optional README.md, nothing
else.

Exercise folders are written by people and travel like the catalogue's case folders, so they pass the same
kind of gate: the folder's name is a plain word, the files are few and small, the YAML is read strictly (a
key given twice, an alias, an unknown field: each one line naming the file and field), and every step is
read by the catalogue's vocabulary (lab.catalogue.steps) against the guide's lab, so a misspelt host or
field is found when the exercise is listed, not in the middle of a learner's session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.catalogue.case import read_yaml
from lab.catalogue.steps import HOST, HOSTS, Problems, Run, Step, fields_of, read_step
from lab.errors import InputError
from lab.exercises import EXERCISES_DIR
from lab.platforms import platform_names
from lab.topology import Topology
from lab.walkthrough import WALKTHROUGH, sections

EXERCISE_FILE = "exercise.yaml"
OTHER_FILES = ("README.md",)
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,39}")
MAX_FILE_BYTES = 32 * 1024  # the longest exercise.yaml is ~3 KiB
MAX_HINTS = 3
#: What may break the lab or repair it: actions of the catalogue's vocabulary. A check may be any other step
#: type that judges the lab as it is now (a `run` whose exit status and output say something, too).
ACTIONS = ("run", "restart")
CHECKS = ("tunnel", "ike_sa", "child_sa", "flow", "ping", "log", "counters", "capture", "run")
TOP_FIELDS = ("title", "practises", "platforms", "told", "fault", "checks", "hints", "solution")
SOLUTION_FIELDS = ("fix", "found_with", "steps")
FOUND_WITH_FIELDS = ("on", "command", "shows")


def hosts_of(step: Step) -> list[str]:
    """The hosts a step acts on or reads (`gateways` as written): its fields of host kinds."""
    names: list[str] = []
    for f in fields_of(type(step)):
        if f.metadata["kind"] in (HOST, HOSTS):
            value = getattr(step, f.name)
            names += [v for v in (value if isinstance(value, tuple) else (value,)) if v and v not in names]
    return names


class ExerciseError(InputError):
    """Problems in an exercise folder, each naming the file and the field."""


@dataclass(frozen=True)
class Check:
    """A step of the catalogue that holds once the lab is repaired, and what the learner is told while it
    does not (`wrong`, in their words: what they would see, not which command ikedlab ran)."""

    where: str  # "checks[1]", for the maintainer's messages
    step: Step
    wrong: str


@dataclass(frozen=True)
class FoundWith:
    """The guide's command that shows the fault, where to run it, and the line of its output to read
    (`…` stands for anything, as in docs/walkthrough.md)."""

    on: str
    command: str
    shows: str


@dataclass(frozen=True)
class Exercise:
    name: str
    folder: Path
    title: str
    practises: str  # a section of docs/walkthrough.md
    platforms: tuple[str, ...]  # the gateways' platforms the fault and the solution are written for
    told: str
    fault: tuple[Step, ...]
    checks: tuple[Check, ...]
    hints: tuple[str, ...]
    fix: str
    found_with: FoundWith
    solution: tuple[Step, ...]

    def hosts(self) -> list[str]:
        """Every host a step or the solution's command names, `gateways` as it is written."""
        names: list[str] = [self.found_with.on]
        for step in (*self.fault, *(c.step for c in self.checks), *self.solution):
            names += [n for n in hosts_of(step) if n not in names]
        return names


def load_all(root: Path = EXERCISES_DIR, topology: Topology | None = None) -> list[Exercise]:
    """Every exercise under `root`; ExerciseError with every problem of every folder."""
    from lab.exercises import exercise_dirs

    found, problems = [], []
    for folder in exercise_dirs(root):
        try:
            found.append(load(folder, topology))
        except ExerciseError as e:
            problems += e.problems
    if problems:
        raise ExerciseError(problems)
    return found


def find(name: str, root: Path = EXERCISES_DIR, topology: Topology | None = None) -> Exercise:
    """The exercise called `name`; ExerciseError naming the ones there are when there is none."""
    from lab.exercises import exercise_dirs

    if not NAME_RE.fullmatch(name) or not (root / name / EXERCISE_FILE).is_file():
        names = ", ".join(p.name for p in exercise_dirs(root)) or "none"
        shown = name if NAME_RE.fullmatch(name) else repr(name[:40])
        raise ExerciseError([f"no exercise {shown} (exercises: {names})"])
    return load(root / name, topology)


def load(folder: Path, topology: Topology | None = None) -> Exercise:
    """Read and check the exercise in `folder` against `topology` (the guide's lab when None)."""
    if topology is None:
        from lab.placement import load_topology

        topology = load_topology(None)
    name = folder.name
    if not NAME_RE.fullmatch(name):
        raise ExerciseError(
            [f"{folder}: an exercise's folder name is lower-case letters, digits and '-', at most 40"]
        )
    problems = Problems()
    text = ""
    for path in sorted(folder.iterdir()):
        shown = f"{name}/{path.name}"
        if path.is_symlink() or not path.is_file():
            problems.add(shown, "not a plain file (an exercise folder holds only files)")
        elif path.name not in (EXERCISE_FILE, *OTHER_FILES):
            problems.add(shown, f"an exercise folder holds {EXERCISE_FILE} and {', '.join(OTHER_FILES)} only")
        elif path.stat().st_size > MAX_FILE_BYTES:
            problems.add(shown, f"larger than {MAX_FILE_BYTES // 1024} KiB")
        elif path.name == EXERCISE_FILE:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                problems.add(shown, f"unreadable: {e}")
    exercise = None if problems else _read(folder, text, topology, problems)
    if problems or exercise is None:
        raise ExerciseError(problems.items)
    return exercise


def _read(folder: Path, text: str, topology: Topology, problems: Problems) -> Exercise | None:
    where = f"{folder.name}/{EXERCISE_FILE}"
    try:
        data = read_yaml(text)
    except ValueError as e:
        problems.add(where, str(e))
        return None
    if not isinstance(data, dict):
        problems.add(where, f"expected a mapping ({', '.join(TOP_FIELDS)})")
        return None
    _unknown(data, TOP_FIELDS, where, problems)
    hosts = list(topology.hosts)

    def text_of(key: str, value: Any = None, at: str = "") -> str:
        value = data.get(key) if value is None and not at else value
        if not isinstance(value, str) or not value.strip():
            problems.add(f"{where}: {at or key}", "expected a text")
            return ""
        return value.strip()

    title = text_of("title")
    if "\n" in title:
        problems.add(f"{where}: title", "one line")
    practises = text_of("practises")
    # docs/ is a checkout's (an installed ikedlab has none): there every exercise names a real section.
    known_sections = sections(WALKTHROUGH.read_text()) if WALKTHROUGH.is_file() else [practises]
    if practises and practises not in known_sections:
        problems.add(
            f"{where}: practises",
            f"{practises!r} is not a section of docs/walkthrough.md ({'; '.join(known_sections)})",
        )
    platforms = data.get("platforms")
    if not isinstance(platforms, list) or not platforms or not all(p in platform_names() for p in platforms):
        problems.add(f"{where}: platforms", f"expected a list of platforms ({', '.join(platform_names())})")
        platforms = []
    told = text_of("told")
    fault = _steps(data.get("fault"), f"{where}: fault", ACTIONS, hosts, problems)
    checks = _checks(data.get("checks"), f"{where}: checks", hosts, problems)
    hints = data.get("hints")
    if (
        not isinstance(hints, list)
        or not 1 <= len(hints) <= MAX_HINTS
        or not all(isinstance(h, str) and h.strip() for h in hints)
    ):
        problems.add(f"{where}: hints", f"expected 1 to {MAX_HINTS} texts, from gentle to explicit")
        hints = []
    solution = data.get("solution")
    fix, found_with, steps = "", FoundWith("", "", ""), tuple[Step, ...]()
    if not isinstance(solution, dict):
        problems.add(f"{where}: solution", f"expected a mapping ({', '.join(SOLUTION_FIELDS)})")
    else:
        _unknown(solution, SOLUTION_FIELDS, f"{where}: solution", problems)
        fix = text_of("", solution.get("fix"), "solution.fix")
        found_with = _found_with(solution.get("found_with"), f"{where}: solution.found_with", hosts, problems)
        steps = _steps(solution.get("steps"), f"{where}: solution.steps", ACTIONS, hosts, problems)
    if problems:
        return None
    return Exercise(
        name=folder.name,
        folder=folder,
        title=title,
        practises=practises,
        platforms=tuple(platforms),
        told=told,
        fault=fault,
        checks=checks,
        hints=tuple(h.strip() for h in hints),
        fix=fix,
        found_with=found_with,
        solution=steps,
    )


def _unknown(data: dict, fields: tuple[str, ...], where: str, problems: Problems) -> None:
    for key in data:
        if key not in fields:
            problems.add(
                f"{where}.{key}" if ":" in where else f"{where}: {key}",
                f"unknown field (fields: {', '.join(fields)})",
            )


def _steps(
    value: Any, where: str, kinds: tuple[str, ...], hosts: list[str], problems: Problems
) -> tuple[Step, ...]:
    if not isinstance(value, list) or not value:
        problems.add(where, f"expected a list of steps ({', '.join(kinds)})")
        return ()
    steps = [_step(raw, f"{where}[{i}]", kinds, hosts, problems) for i, raw in enumerate(value)]
    return tuple(s for s in steps if s is not None)


def _step(raw: Any, where: str, kinds: tuple[str, ...], hosts: list[str], problems: Problems) -> Step | None:
    """One step of the catalogue's vocabulary, of one of `kinds` (actions here, checks there)."""
    if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) not in kinds:
        problems.add(where, f"{next(iter(raw))!r}: here a step is one of {', '.join(kinds)}")
        return None
    return read_step(raw, where, problems, hosts)


def _checks(value: Any, where: str, hosts: list[str], problems: Problems) -> tuple[Check, ...]:
    if not isinstance(value, list) or not value:
        problems.add(where, "expected a list of checks, each a step and what is `wrong` while it fails")
        return ()
    checks = []
    for i, raw in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("wrong"), str) or not raw["wrong"].strip():
            problems.add(at, "a check is a step and `wrong`: what the learner is told while it fails")
            continue
        if "\n" in raw["wrong"].strip():
            problems.add(f"{at}.wrong", "one line")
        step = _step({k: v for k, v in raw.items() if k != "wrong"}, at, CHECKS, hosts, problems)
        if step is not None:
            if isinstance(step, Run) and step.status == "any" and not step.output:
                problems.add(at, "a `run` check needs a status or an output to judge")
            checks.append(Check(f"checks[{i}]", step, raw["wrong"].strip()))
    return tuple(checks)


def _found_with(value: Any, where: str, hosts: list[str], problems: Problems) -> FoundWith:
    if not isinstance(value, dict):
        problems.add(where, f"expected a mapping ({', '.join(FOUND_WITH_FIELDS)})")
        return FoundWith("", "", "")
    _unknown(value, FOUND_WITH_FIELDS, where, problems)
    parts = {}
    for key in FOUND_WITH_FIELDS:
        item = value.get(key)
        if not isinstance(item, str) or not item.strip() or "\n" in item.strip():
            problems.add(f"{where}.{key}", "expected one line of text")
        parts[key] = str(item or "").strip()
    if parts["on"] and parts["on"] not in hosts:
        problems.add(f"{where}.on", f"{parts['on']!r} is not a host of the lab ({', '.join(hosts)})")
    return FoundWith(**parts)
