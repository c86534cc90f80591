"""The recorded OpenBSD strings (strings.yaml beside this file): loading, printf formats, the README table.

Used by the fake installer (which prints only what this list holds), by tests/test_openbsd_strings.py, and by
`python tests/data/openbsd/strings.py --write-readme`, which rewrites the table in images/openbsd/README.md.
"""

from __future__ import annotations

import re
import sys
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
        )
        for key, entry in data.items()
    }


def c_printf(fmt: str, *args: object) -> str:
    """C's printf for the conversions OpenBSD's programs use here (length modifiers dropped)."""
    python = _CONVERSION.sub(lambda m: "%" + m[1] + (m[2] or "") + (f".{m[3]}" if m[3] else "") + m[5], fmt)
    return python % args


def format_regex(fmt: str) -> re.Pattern[str]:
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
        elif conv in "xXp":
            parts.append(r" *(?:0x)?[0-9a-fA-F]+")
        elif conv == "o":
            parts.append(r" *[0-7]+")
        elif conv == "f":
            parts.append(r" *-?\d+(?:\.\d+)?")
        elif conv == "c":
            parts.append(r".")
        else:  # s
            parts.append(r" *.*?")
        last = m.end()
    parts.append(re.escape(fmt[last:]))
    return re.compile("".join(parts))


def readme_table(record: dict[str, Recorded] | None = None) -> str:
    """The Markdown table images/openbsd/README.md carries between its markers."""
    rows = ["| what ikedlab reads or a fake prints | source (OpenBSD src) | revision |", "|---|---|---|"]
    for entry in (record or load()).values():
        shown = entry.text if entry.text is not None else entry.format
        cell = (shown or "").replace("|", "\\|").replace("`", "'")
        rows.append(f"| `{cell}` | {entry.source} | {entry.revision} |")
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
