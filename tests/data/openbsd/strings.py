"""The recorded OpenBSD strings (strings.yaml beside this file): loading, printf formats, the README table.

Used by the fake installer (which prints only what this list holds), by tests/test_openbsd_strings.py, and by
`python tests/data/openbsd/strings.py --write-readme`, which rewrites the table in
images/openbsd/README.md.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RECORD = HERE / "strings.yaml"
README = HERE.parents[2] / "images" / "openbsd" / "README.md"
TABLE_BEGIN = "<!-- strings: generated from tests/data/openbsd/strings.yaml -->"
TABLE_END = "<!-- end of strings -->"

# A C printf conversion: flags, width, precision (either may be *), length modifier, conversion.
_CONVERSION = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d+))?(hh|h|ll|l|q|z|t|j)?([diouxXcsfp%])")


@dataclass(frozen=True)
class Recorded:
    id: str
    source: str
    revision: str
    why: str
    text: str | None = None  # as printed on the build VM
    format: str | None = None  # a printf format, where the fake or a fixture fills it in
    default: str | None = None  # an installer question's default on the build VM
    formats: tuple[str, ...] = ()  # several formats of one printer (netstat's counters), instead of format
    role: str = "piece"  # "argument": a value that fills a %s of a piece (in fixtures)
    fixtures: tuple[str, ...] = ()  # the fixture files (globs, in this folder) the entry may print in

    def shapes(self) -> tuple[str, ...]:
        """Its formats, or its one format, or its text (a text has no conversions to fill)."""
        if self.formats:
            return self.formats
        if self.format is not None:
            return (self.format,)
        return (self.text or "",) if self.text is not None else ()

    def prints_in(self, fixture: str) -> bool:
        return any(fnmatch.fnmatchcase(fixture, pattern) for pattern in self.fixtures)

    def render(self, *args: object) -> str:
        """The text, or the format filled in the way C's printf would."""
        if not args:
            if self.text is None:
                raise ValueError(f"{self.id} is a format: give its arguments")
            return self.text
        if self.format is None:
            raise ValueError(f"{self.id} has no format")
        return c_printf(self.format, *args)

    def regex(self) -> re.Pattern[str]:
        """What any filling-in of the format (or the text itself) looks like."""
        return format_regex(self.format) if self.format else re.compile(re.escape(self.text or ""))


def load(path: Path = RECORD) -> dict[str, Recorded]:
    data = yaml.safe_load(path.read_text())
    return {
        key: Recorded(
            id=key,
            source=str(entry["source"]),
            revision=str(entry["revision"]),
            why=str(entry.get("why", "")).strip(),
            text=entry.get("text"),
            format=entry.get("format"),
            default=None if entry.get("default") is None else str(entry["default"]),
            formats=tuple(entry.get("formats", ())),
            role=str(entry.get("role", "piece")),
            fixtures=tuple(entry.get("fixtures", ())),
        )
        for key, entry in data.items()
    }


def c_printf(fmt: str, *args: object) -> str:
    """C's printf for the conversions OpenBSD's programs use here (length modifiers dropped)."""
    python = _CONVERSION.sub(lambda m: "%" + m[1] + (m[2] or "") + (f".{m[3]}" if m[3] else "") + m[5], fmt)
    return python % args


def format_regex(
    fmt: str, *, string: str = r" *.*?", pointer: str = r" *(?:0x)?[0-9a-fA-F]+"
) -> re.Pattern[str]:
    """A regex matching what `fmt` prints for any arguments (widths loosely: a field may be padded)."""
    parts: list[str] = []
    last = 0
    for m in _CONVERSION.finditer(fmt):
        parts.append(re.escape(fmt[last : m.start()]))
        conv = m[5]
        if conv == "%":
            parts.append("%")
        elif conv in "diu":
            parts.append(r" *-?\d+")
        elif conv == "p":
            parts.append(pointer)
        elif conv in "xX":
            parts.append(r" *(?:0x)?[0-9a-fA-F]+")
        elif conv == "o":
            parts.append(r" *[0-7]+")
        elif conv == "f":
            parts.append(r" *-?\d+(?:\.\d+)?")
        elif conv == "c":
            parts.append(r".")
        else:  # s
            parts.append(string)
        last = m.end()
    parts.append(re.escape(fmt[last:]))
    return re.compile("".join(parts))


def piece_regex(fmt: str, arguments: Sequence[str] = (), *, text: bool = False) -> str:
    """What one piece of a command's output looks like, as a regex source.

    Stricter than format_regex: a %s is one word (no white space) unless it is one of the recorded
    `arguments` (a name from a table, strerror's text), so a fixture cannot slip words of its own into a
    %s; a %p is an address, "0x0" on OpenBSD or glibc's "(nil)". A text piece is matched as it is.
    """
    if text:
        return re.escape(fmt)
    words = "|".join(re.escape(a) for a in sorted(set(arguments), key=len, reverse=True))
    string = f"(?:{words}|\\S*?)" if words else r"\S*?"
    return format_regex(fmt, string=string, pointer=r"(?:0x[0-9a-f]+|\(nil\))").pattern


def fixture_pattern(fixture: str, record: dict[str, Recorded] | None = None) -> re.Pattern[str] | None:
    """A regex every line of `fixture` matches whole: a row of the pieces recorded for it (None: none are)."""
    entries = [e for e in (record or load()).values() if e.prints_in(fixture)]
    arguments = [e.text or "" for e in entries if e.role == "argument"]
    pieces = [
        piece_regex(shape, arguments, text=e.text is not None and not e.format and not e.formats)
        for e in entries
        if e.role != "argument"
        for shape in e.shapes()
    ]
    if not pieces:
        return None
    return re.compile("(?:" + "|".join(f"(?:{p})" for p in pieces) + ")+")


def readme_table(record: dict[str, Recorded] | None = None) -> str:
    """The Markdown table images/openbsd/README.md carries between its markers."""
    rows = ["| what ikedlab reads or a fake prints | source (OpenBSD src) | revision |", "|---|---|---|"]
    for entry in (record or load()).values():
        shown = [entry.text] if entry.text is not None else list(entry.shapes())
        cells = [(s or "").replace("|", "\\|").replace("`", "'").replace("\t", "\\t") for s in shown]
        cell = "<br>".join(f"`{c}`" for c in cells)
        rows.append(f"| {cell} | {entry.source} | {entry.revision} |")
    return "\n".join([TABLE_BEGIN, *rows, TABLE_END])


def readme_block(text: str) -> str | None:
    """The generated table as it stands in a README's text (None when the markers are missing)."""
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(TABLE_END)]


def write_readme(path: Path = README) -> None:
    text = path.read_text()
    block = readme_block(text)
    if block is None:
        raise SystemExit(f"{path}: no {TABLE_BEGIN} … {TABLE_END} markers to write the table between")
    path.write_text(text.replace(block, readme_table()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-readme"]:
        write_readme()
    else:
        print(readme_table())
