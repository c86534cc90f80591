"""Golden images for the lab's guests. This module is the public API only; each concept has its module.

Linux, an appliance made of Debian packages (recipe in images/linux/):
    linux           LinuxImage, linux_image(): the cache of built images and the build itself
    manifest        the inputs whose hash is the cache key, and what changed between two manifests
    recipe          images/linux/recipe.yaml, read and checked
    apt             the package closure and versions from the host's apt, and the .deb downloads
    rootfs          the staged root tree: packages unpacked, busybox links, the recipe's files
    libraries       ELF files read, every program's libraries found, unused ones pruned
    kernel_modules  the recipe's kernel modules and their dependencies
    tree            paths in the staged tree (merged /usr, symlinks followed as the guest would)
    initramfs       the reproducible gzip'ed cpio writer
    cache           where images and downloads are kept (both platforms)

OpenBSD, a qcow2 installed from the official media (recipe in images/openbsd/):
    media           download of the install ISO and its signify verification
    installer       the unattended install dialogue over the serial console
    openbsd         OpenBSDImage, build_openbsd_image(): the golden image and its cache
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.images.cache import default_cache_dir, mark_in_use
    from lab.images.linux import LinuxImage, cached_linux_image, linux_image
    from lab.images.openbsd import OpenBSDImage, build_openbsd_image, cached_openbsd_image

#: Each public name and its module, imported on first use: the Linux image's warm path
#: does not pay for the OpenBSD builder's imports (pexpect, jinja2, urllib), nor the other way round.
_EXPORTS = {
    "LinuxImage": "linux",
    "OpenBSDImage": "openbsd",
    "build_openbsd_image": "openbsd",
    "cached_linux_image": "linux",
    "cached_openbsd_image": "openbsd",
    "default_cache_dir": "cache",
    "mark_in_use": "cache",
    "linux_image": "linux",
}

__all__ = [
    "LinuxImage",
    "OpenBSDImage",
    "build_openbsd_image",
    "cached_linux_image",
    "cached_openbsd_image",
    "default_cache_dir",
    "mark_in_use",
    "linux_image",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lab.images.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
