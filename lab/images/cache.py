"""Where ikedlab keeps what it builds and downloads: one cache directory, shared by both platforms."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    if env := os.environ.get("IKEDLAB_CACHE_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "ikedlab"
    return Path.home() / ".cache" / "ikedlab"
