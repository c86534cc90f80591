"""Kernel modules for the initramfs: the recipe's names (or globs) chosen from modules.dep with their
dependencies, copied out of the kernel package, and depmod run on the result."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path

from lab.command import run
from lab.errors import ImageError
from lab.images.apt import tool


def module_name(path: str) -> str:
    """kernel/crypto/sha512_generic.ko(.xz) -> sha512_generic; dashes and underscores are the same."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    deps = {}
    for line in text.splitlines():
        module, sep, rest = line.partition(":")
        if sep:
            deps[module.strip()] = rest.split()
    return deps


def select_modules(
    wanted: Iterable[str], deps: Mapping[str, list[str]], builtin: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(module paths to copy, with their dependencies; names matching nothing). Built-ins need no file."""
    by_name = {module_name(p): p for p in deps}
    builtin_names = {module_name(b) for b in builtin}
    chosen: set[str] = set()
    unknown = []
    for item in wanted:
        if "/" in item:
            hits = [p for p in deps if fnmatchcase(p.split(".ko", 1)[0], item.split(".ko", 1)[0])]
            if hits:
                chosen.update(hits)
            else:
                unknown.append(item)
        elif (name := item.replace("-", "_")) in by_name:
            chosen.add(by_name[name])
        elif name not in builtin_names:
            unknown.append(item)
    todo = list(chosen)
    while todo:
        for dep in deps.get(todo.pop(), []):
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return sorted(chosen), unknown


def install_modules(kernel_root: Path, root: Path, release: str, wanted: Iterable[str]) -> list[str]:
    """Copy the wanted modules and their dependencies into root and run depmod there."""
    depmod = tool("depmod", "kmod")
    source = kernel_root / "lib/modules" / release
    run([depmod, "-b", kernel_root, release], timeout=120)  # Debian ships no modules.dep
    deps = parse_modules_dep((source / "modules.dep").read_text())
    builtin = (source / "modules.builtin").read_text().split()
    paths, unknown = select_modules(wanted, deps, builtin)
    if unknown:
        raise ImageError(
            f"kernel {release} has no module {', '.join(unknown)}",
            "fix `modules:` in images/linux/recipe.yaml (names as in modules.dep, or globs with a /)",
        )
    target = root / "usr/lib/modules" / release
    for rel in paths:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target / rel)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    run([depmod, "-b", root, release], timeout=120)  # lib -> usr/lib, so depmod finds usr/lib/modules
    return paths
