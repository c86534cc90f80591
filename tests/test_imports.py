"""The package's shape: its import graph has no circles, every module imports on its own in a fresh
interpreter state, and no module is over 500 lines.

Every import counts: inside functions, and under TYPE_CHECKING too (two modules that name each other's types
know each other; the reader walks a circle all the same). A package that exports names lazily (a module
`__getattr__` over an `_EXPORTS` table, as lab.images does) imports the module each name comes from."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "lab"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(LAB.rglob("*.py")) if p.name != "__main__.py"}


def _lazy_exports() -> dict[str, str]:
    """`package.name` -> `package.module` for packages that import their public names on first use."""
    found = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and "_EXPORTS" in ast.unparse(node):
                table = ast.literal_eval(node.value)  # type: ignore[arg-type]
                found.update({f"{name}.{k}": f"{name}.{v}" for k, v in table.items()})
    return found


LAZY = _lazy_exports()


def _imports(path: Path) -> set[str]:
    """The lab modules `path` imports at run time, with the packages each import runs on the way."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = LAZY.get(name, name).split(".")
            found.update(
                ".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {_module(path)}


def test_the_import_graph_has_no_cycle():
    graph = {name: _imports(path) for name, path in MODULES.items()}
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    done: set[str] = set()

    def walk(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(name) :] + [name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            walk(dep, trail + [name])
        done.add(name)

    for name in sorted(graph):
        walk(name, [])


def test_lazy_exports_are_seen():
    assert LAZY["lab.images.build_openbsd_image"] == "lab.images.openbsd"
    assert "lab.images.openbsd" in _imports(MODULES["lab.platforms.openbsd"])


def test_topology_knows_no_platform():
    assert not {m for m in _imports(MODULES["lab.topology"]) if m.startswith("lab.platforms")}


def test_every_module_imports_alone():
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'lab' or m.startswith('lab.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


MAX_LINES = 500  # issue 19: no module a walk has to cross is a hub again


def test_no_module_is_over_500_lines():
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these along their own sections: {long}"
