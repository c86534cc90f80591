"""Where ikedlab keeps what it builds and downloads: one cache directory, shared by both platforms."""

from __future__ import annotations

import os
from pathlib import Path

from lab import private


def default_cache_dir() -> Path:
    return private.cache_dir()


def mark_in_use(image_file: Path) -> None:
    """Mark the image holding `image_file` as just handed to a lab (its directory's mtime): a cache keeps the
    images labs asked for lately, so no other checkout's build removes one a lab (or its snapshot) boots."""
    try:
        os.utime(image_file.parent)
    except OSError:
        pass  # a read-only cache is not ours to clean either
