"""docs/walkthrough.md as a test: its `lab` blocks parsed into steps (a command on a host, the lines its
output must show), and the judge of one step's output. scenarios/test_walkthrough.py runs the steps."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab import PROJECT_ROOT
from lab.errors import ParseError

WALKTHROUGH = PROJECT_ROOT / "docs" / "walkthrough.md"
ANYTHING = "…"
_FENCE = re.compile(r"^```lab(?:\s+(\S+))?\s*$")
_EXEC = re.compile(r"^\$ ikedlab exec (\S+) -- (.+)$")


@dataclass(frozen=True)
class Step:
    host: str
    command: str
    expected: tuple[str, ...]
    line: int  # where the command is in the file
    platform: str  # the platform whose output the block shows ("" when any)
    title: str  # the section it belongs to

    def __str__(self) -> str:
        return f"{self.host}: {self.command}"


def parse(text: str, source: str = "docs/walkthrough.md") -> list[Step]:
    """Every command of every ```lab block, with the lines expected after it."""
    steps: list[Step] = []
    title, platform, in_block = "", "", False
    current: dict | None = None

    def close() -> None:
        nonlocal current
        if current:
            steps.append(Step(expected=tuple(current.pop("expected")), **current))
        current = None

    for number, line in enumerate(text.splitlines(), 1):
        if not in_block:
            if line.startswith("#"):
                title = line.lstrip("#").strip()
            elif fence := _FENCE.match(line):
                in_block, platform = True, fence.group(1) or ""
            continue
        if line.startswith("```"):
            close()
            in_block = False
        elif line.startswith("$ "):
            close()
            command = _EXEC.match(line)
            if not command:
                raise ParseError(
                    f"{source}:{number}: a lab block runs `$ ikedlab exec HOST -- COMMAND`, not {line!r}"
                )
            current = {
                "host": command.group(1),
                "command": command.group(2),
                "expected": [],
                "line": number,
                "platform": platform,
                "title": title,
            }
        elif current is None:
            raise ParseError(f"{source}:{number}: output before any `$ ikedlab exec` line")
        elif line.strip():
            current["expected"].append(line)
    if in_block:
        raise ParseError(f"{source}: a ```lab block is not closed")
    return steps


def load(path: Path = WALKTHROUGH) -> list[Step]:
    return parse(
        path.read_text(),
        str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path),
    )


def _pattern(expected: str) -> re.Pattern[str]:
    parts = [
        re.escape(part.strip() if i == 0 else part) for i, part in enumerate(expected.strip().split(ANYTHING))
    ]
    return re.compile(".*".join(parts))


def shows(expected: str, output: str) -> bool:
    """Whether a line of `output` shows the `expected` line (contains it, `…` matching anything)."""
    pattern = _pattern(expected)
    return any(pattern.search(line) for line in output.splitlines())


def missing(step: Step, output: str) -> list[str]:
    """The expected lines that no line of `output` shows."""
    return [e for e in step.expected if not shows(e, output)]


def sections(text: str) -> list[str]:
    """The titles of the walkthrough's sections (its `## ` headings), which exercises name as what they
    practise."""
    return [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
