"""The Linux image's manifest, whose hash is the cache key: the recipe's files, the builder's own source
and (from apt) the package versions; and what changed between two manifests, in words."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.images.recipe import Recipe, recipe_hashes, variant_hash

#: Bump when the cache layout or image.json changes shape.
FORMAT = 1
#: The package's modules that are not the Linux builder: the OpenBSD image's, and the public API's list.
#: Every other module of lab/images/ is hashed into the manifest, so a module added later counts too.
NOT_BUILDER = frozenset({"__init__.py", "installer.py", "media.py", "openbsd.py"})
PACKAGE_DIR = Path(__file__).resolve().parent


def builder_modules(package: Path = PACKAGE_DIR) -> list[Path]:
    """The Linux builder's source files: every module of the package but the OpenBSD ones, sorted."""
    return sorted(p for p in package.glob("*.py") if p.name not in NOT_BUILDER)


def builder_hash(package: Path = PACKAGE_DIR) -> str:
    """sha256 over the builder's modules (names and contents), so a change to any of them rebuilds."""
    digest = hashlib.sha256()
    for path in builder_modules(package):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def local_inputs(recipe: Recipe) -> dict[str, Any]:
    """The manifest's inputs that need no apt: the recipe files and the builder's own source."""
    inputs: dict[str, Any] = {
        "format": FORMAT,
        "builder": builder_hash(),
        "recipe": recipe_hashes(recipe.directory),
    }
    if recipe.variant:  # the default image's manifest stays as it was
        inputs["variant"] = {"name": recipe.variant, "suite": recipe.suite, "file": variant_hash(recipe)}
    return inputs


def manifest_key(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Every difference between two manifests, one line each, for --debug."""
    changes = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section), new.get(section)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            for name in sorted(set(before) | set(after)):
                if name not in before:
                    changes.append(f"{section}: added {name} {after[name]}")
                elif name not in after:
                    changes.append(f"{section}: removed {name}")
                elif before[name] != after[name]:
                    changes.append(f"{section}: {name} {before[name]} -> {after[name]}")
        else:
            changes.append(f"{section}: {before} -> {after}")
    return changes


def summarize_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """One line naming what changed, e.g. 'packages (libssl3, openssl); recipe (init)'."""
    parts = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section), new.get(section)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            names = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
            shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            parts.append(f"{section} ({shown})")
        else:
            parts.append(section)
    return "; ".join(parts) or "none"
