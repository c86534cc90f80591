"""Programs the Linux image builds from source (the recipe's `programs:`): small C helpers that no Debian
package offers, compiled on the host by its gcc (scripts/setup-host.sh installs it) while the image is
staged, offline, in a fraction of a second. Their sources are files of the recipe, so the image's manifest
hash covers them.

Static: they then need none of the image's libraries (a variant's glibc is another suite's) and start as
busybox-static's applets do. Under TCG a static program starts in 6-19 ms, a dynamic one in 44-54 ms
(images/linux/recipe.yaml, packages:); the reseed helper runs on every restored guest's sync line.
"""

from __future__ import annotations

from pathlib import Path

from lab.command import CommandFailed, run
from lab.errors import ImageError
from lab.images.recipe import Recipe

#: Size over speed (these run once per restore), warnings are errors, no symbols (the bytes depend only on
#: the source and the host's compiler and C library).
CFLAGS = ("-Os", "-static", "-s", "-Wall", "-Wextra", "-Werror")


def build_programs(recipe: Recipe, root: Path) -> list[str]:
    """Compile each of the recipe's programs into the staged tree `root`; returns the paths made."""
    made = []
    for rel, source in sorted(recipe.programs.items()):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        try:
            run(["gcc", *CFLAGS, "-o", dest, recipe.directory / source], timeout=120)
        except CommandFailed as e:
            raise ImageError(
                f"{recipe.directory / source}: cannot build /{rel}: {e}",
                "scripts/setup-host.sh installs gcc and the C library's static archive (libc6-dev)",
            ) from None
        dest.chmod(0o755)
        made.append(rel)
    return made
