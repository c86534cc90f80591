"""ruff and mypy as ordinary tests, so CI enforces them without a second tool."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.skip(f"{name} is not installed: pip install {name} (make setup does)")
    return found


def test_ruff_is_clean():
    done = subprocess.run(
        [tool("ruff"), "check", "lab", "tests", "scenarios", "faults", "nightly"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean():
    done = subprocess.run([tool("mypy"), "lab"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
