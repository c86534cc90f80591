"""The Linux image's recipe: images/linux/recipe.yaml read and checked, and the hashes of its files."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import PROJECT_ROOT
from lab.errors import ImageError, first_and_more
from lab.images.tree import walk


def _recipes() -> Path:
    """The image recipes: the checkout's top-level images/, which the wheel carries as lab/images/recipes/
    (pyproject.toml maps it), so an installed ikedlab builds images too."""
    installed = Path(__file__).resolve().parent / "recipes"
    return installed if installed.is_dir() else PROJECT_ROOT / "images"


RECIPES = _recipes()
RECIPE_DIR = RECIPES / "linux"
#: Variants of the recipe, one file each (recipes/linux/variants/<name>.yaml); hashed into their own images'
#: keys only, so adding a variant does not rebuild the default image.
VARIANTS = "variants"
#: The suite of the host's own apt (the default recipe's packages).
HOST_SUITE = "bookworm"


@dataclass(frozen=True)
class Recipe:
    directory: Path
    packages: tuple[str, ...]
    exclude: frozenset[str]
    kernel: str
    cmdline: str
    modules: tuple[str, ...]
    strip: tuple[str, ...]
    require: tuple[str, ...]
    keep: tuple[str, ...]
    directories: Mapping[str, int]
    symlinks: Mapping[str, str]
    modes: Mapping[str, int]
    # package -> {path it ships: path in the image}, for a path two packages ship (busybox, busybox-static)
    rename: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    # path in the image -> a C source of the recipe (programs/NAME.c), built on the host (images/programs.py)
    programs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    suite: str = HOST_SUITE  # the Debian suite of the packages (the kernel always comes from the host's)
    variant: str | None = None  # None: the recipe as it is

    @property
    def init(self) -> Path:
        return self.directory / "init"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @classmethod
    def load(cls, directory: Path) -> Recipe:
        path = directory / "recipe.yaml"
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ImageError(f"cannot read the Linux image recipe {path}: {e}") from None
        problems: list[str] = []
        if not isinstance(data, dict):
            raise ImageError(f"{path}: expected a mapping of recipe fields")

        def names(field: str, required: bool = True) -> tuple[str, ...]:
            value = data.get(field, None if required else [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                problems.append(f"{field}: expected a list of names")
                return ()
            return tuple(value)

        def text(field: str) -> str:
            value = data.get(field)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{field}: expected a string")
                return ""
            return value.strip()

        def mapping(field: str) -> dict[str, str]:
            value = data.get(field, {}) or {}
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                problems.append(f"{field}: expected a mapping of path to string")
                return {}
            return {str(k).strip("/"): v for k, v in value.items()}

        def modes(field: str) -> dict[str, int]:
            result = {}
            for where, mode in mapping(field).items():
                try:
                    result[where] = int(mode, 8)
                except ValueError:
                    problems.append(f"{field}.{where}: {mode!r} is not an octal mode")
            return result

        def renames() -> dict[str, dict[str, str]]:
            value = data.get("rename", {}) or {}
            if not isinstance(value, dict) or not all(
                isinstance(moves, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in moves.items())
                for moves in value.values()
            ):
                problems.append("rename: expected package: {path: new path}")
                return {}
            for package in value:
                if package not in data.get("packages", []):
                    problems.append(f"rename.{package}: not one of packages")
            return {str(p): {k.strip("/"): v.strip("/") for k, v in m.items()} for p, m in value.items()}

        def programs() -> dict[str, str]:
            built = mapping("programs")
            for where, source in built.items():
                if (
                    not source.endswith(".c")
                    or ".." in source.split("/")
                    or not (directory / source).is_file()
                ):
                    problems.append(f"programs.{where}: {source!r} is not a C source file of the recipe")
            return built

        recipe = cls(
            directory=directory,
            packages=names("packages"),
            exclude=frozenset(names("exclude", required=False)),
            kernel=text("kernel"),
            cmdline=text("cmdline"),
            modules=names("modules"),
            strip=tuple(s.strip("/") for s in names("strip", required=False)),
            require=tuple(r.strip("/") for r in names("require", required=False)),
            keep=names("keep", required=False),
            directories=modes("directories"),
            symlinks=mapping("symlinks"),
            modes=modes("modes"),
            rename=renames(),
            programs=programs(),
        )
        if excluded_roots := sorted(set(recipe.packages) & recipe.exclude):
            problems.append(f"exclude: {', '.join(excluded_roots)} also listed in packages")
        allowed = {f.name for f in cls.__dataclass_fields__.values()} - {"suite", "variant"}  # variants' own
        if unknown := sorted(set(data) - allowed):
            problems.append(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if not (directory / "init").is_file():
            problems.append(f"the PID 1 script {directory / 'init'} is missing")
        if problems:
            message, others = first_and_more([f"{path}: {p}" for p in problems])
            raise ImageError(message, details=others)
        return recipe


def variant_names(directory: Path = RECIPE_DIR) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (directory / VARIANTS).glob("*.yaml")))


#: A variant's fields: the suite, and names added to the recipe's lists.
_VARIANT_LISTS = ("packages", "exclude", "require", "strip", "keep")


def with_variant(recipe: Recipe, name: str) -> Recipe:
    """The recipe changed by recipes/linux/variants/<name>.yaml: another suite, more packages and files.

    A variant takes the whole package closure from its suite (libc, OpenSSL and all), so its programs find
    the libraries they were built against; only the kernel stays the recipe's. A package it adds is taken
    even where the recipe excludes it.
    """
    path = recipe.directory / VARIANTS / f"{name}.yaml"
    known = variant_names(recipe.directory)
    if name not in known:
        raise ImageError(f"unknown Linux image variant '{name}' (known: {', '.join(known) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ImageError(f"cannot read the Linux image variant {path}: {e}") from None
    if not isinstance(data, dict):
        raise ImageError(f"{path}: expected a mapping of variant fields")
    if unknown := sorted(set(data) - {"suite", *(f"add_{k}" for k in _VARIANT_LISTS)}):
        raise ImageError(f"{path}: unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    suite = data.get("suite", recipe.suite)
    if not isinstance(suite, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
        raise ImageError(f"{path}: suite: expected a Debian suite name such as trixie")
    changes: dict[str, object] = {"suite": suite, "variant": name}
    for field in _VARIANT_LISTS:
        added = data.get(f"add_{field}", []) or []
        if not isinstance(added, list) or not all(isinstance(v, str) and v for v in added):
            raise ImageError(f"{path}: add_{field}: expected a list of names")
        current = getattr(recipe, field)
        if isinstance(current, frozenset):
            changes[field] = current | set(added)
        else:
            extra = tuple(a.strip("/") if field in ("require", "strip") else a for a in added)
            changes[field] = current + tuple(e for e in extra if e not in current)
    # A package a variant names is wanted there even where the recipe leaves it out (a library its daemon
    # links against).
    packages, exclude = changes["packages"], changes["exclude"]
    assert isinstance(packages, tuple) and isinstance(exclude, frozenset)
    changes["exclude"] = exclude - set(packages)
    return dataclasses.replace(recipe, **changes)  # type: ignore[arg-type]


def variant_hash(recipe: Recipe) -> str | None:
    """sha256 of the variant's file; None for the recipe as it is."""
    if recipe.variant is None:
        return None
    return hashlib.sha256((recipe.directory / VARIANTS / f"{recipe.variant}.yaml").read_bytes()).hexdigest()


def recipe_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under the recipe directory but the variants, by relative path."""
    hashes = {}
    for path in walk(directory):
        rel = path.relative_to(directory)
        if rel.parts[0] == VARIANTS:
            continue
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            hashes[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
