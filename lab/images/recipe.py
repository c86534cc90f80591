"""The Linux image's recipe: images/linux/recipe.yaml read and checked, and the hashes of its files."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import PROJECT_ROOT
from lab.errors import ImageError
from lab.images.tree import walk

RECIPE_DIR = PROJECT_ROOT / "images" / "linux"


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
        )
        if excluded_roots := sorted(set(recipe.packages) & recipe.exclude):
            problems.append(f"exclude: {', '.join(excluded_roots)} also listed in packages")
        if unknown := sorted(set(data) - {f.name for f in cls.__dataclass_fields__.values()}):
            problems.append(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if not (directory / "init").is_file():
            problems.append(f"the PID 1 script {directory / 'init'} is missing")
        if problems:
            hint = "; ".join(problems[1:]) or None
            raise ImageError(f"{path}: {problems[0]}", hint)
        return recipe


def recipe_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under the recipe directory, by relative path."""
    hashes = {}
    for path in walk(directory):
        rel = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            hashes[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
