"""Where ikedlab keeps what it builds and downloads: one cache directory, shared by both platforms."""

from __future__ import annotations

from pathlib import Path

from lab import settings


def default_cache_dir() -> Path:
    return settings.cache_dir()
