"""Errors as a person reads them: a summary line, each further problem on a line of its own, and hints that
act on the lab the user named."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from lab import topology
from lab.errors import IkedlabError, InputError

LAB = Path(__file__).resolve().parent.parent / "lab"


def test_several_problems_each_on_a_line_of_their_own():
    error = InputError(["a.yaml: hosts.x: first", "a.yaml: links.y: second", "a.yaml: links.z: third"])
    assert error.lines() == [
        "ikedlab: a.yaml: hosts.x: first (and 2 more problems)",
        "  - a.yaml: links.y: second",
        "  - a.yaml: links.z: third",
    ]
    assert IkedlabError("one", "do this").lines() == ["ikedlab: one", "hint: do this"]


def test_a_topology_with_two_problems_prints_both_and_no_hint(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text(
        topology.guide_path()
        .read_text()
        .replace("resplan: 10.0.2.2", "resplan: 10.0.3.2")
        .replace("  inet:\n", "  inet:\n    platform: x\n")
    )
    done = subprocess.run(
        [sys.executable, "-m", "lab", "up", "--platform", "linux", "--topology", str(bad)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IKEDLAB_STATE_DIR": str(tmp_path / "state")},
        cwd=LAB.parent,
        timeout=60,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[0] == (
        "ikedlab: site.yaml: links.lan2.ends.resplan: 10.0.3.2 is outside the link's subnet 10.0.2.0/24"
        " (and 1 more problem)"
    )
    assert len(lines) == 2 and lines[1].startswith("  - site.yaml: hosts.inet.platform: "), done.stderr


#: ikedlab's commands that act on one lab: a hint naming one must say which lab (`ikedlab_for`).
_LAB_COMMANDS = (
    "up|down|status|reset|exec|console|iked|bundle|capture|impair|reconfigure|traffic|rekey|graph|snapshot rm"
)
_BARE = re.compile(rf"`ikedlab ({_LAB_COMMANDS})\b")


def _error_calls(tree: ast.AST):  # noqa: ANN202
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name.endswith(("Error", "Missing")):
                yield node


def test_every_hint_names_the_lab_it_acts_on():
    """A literal "`ikedlab down`" in an error acts on lab `default` whatever --name the user gave."""
    bare = []
    for path in sorted(LAB.rglob("*.py")):
        for call in _error_calls(ast.parse(path.read_text())):
            for node in ast.walk(call):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and _BARE.search(node.value)
                ):
                    bare.append(f"{path.relative_to(LAB.parent)}:{node.lineno}: {node.value.strip()}")
    assert bare == [], "hints without the lab's --name (use ownership.ikedlab_for):\n" + "\n".join(bare)
