"""Every program of the package (a module with a `main`, run as `python -m lab.X` by make or by ikedlab)
writes its files for its user alone: it sets the umask first. `make catalogue` did not, and its
artifacts/catalogue/ was 0755 with 0644 files, which `make check-secrets` then found open to others."""

from __future__ import annotations

import ast

from lab import PROJECT_ROOT

UMASK_CALLS = ("restrict_umask", "umask")


def test_every_main_of_the_package_sets_the_umask_first():
    missing = []
    for path in sorted((PROJECT_ROOT / "lab").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "main":
                # Among its first statements (the command line may be parsed first: that writes nothing).
                if not any(_sets_umask(statement) for statement in node.body[:3]):
                    missing.append(str(path.relative_to(PROJECT_ROOT)))
    assert not missing, f"main() without private.restrict_umask() among its first statements: {missing}"


def _sets_umask(statement: ast.stmt) -> bool:
    call = statement.value if isinstance(statement, ast.Expr) else None
    func = getattr(call, "func", None)
    return (getattr(func, "attr", None) or getattr(func, "id", None)) in UMASK_CALLS
