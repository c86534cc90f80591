"""What the fault tests share: this checkout's ikedlab as a user runs it, one-line errors, libvirt's view."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import ownership

CHECKOUT = Path(__file__).resolve().parent.parent
TAG = ownership.checkout_tag()
URI = os.environ.get("IKEDLAB_LIBVIRT_URI") or "qemu:///system"


def lab_name(suffix: str) -> str:
    """A fault lab's name: unique to this checkout (and short: names are at most 20 characters)."""
    return f"flt-{TAG}-{suffix}"


def ikedlab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the ikedlab command of this checkout as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=CHECKOUT,
    )


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line a failing command prints (plus at most a hint); fails the test on anything else."""
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith(("ikedlab: ", "hint: "))]
    assert done.returncode != 0, f"expected a failure:\n{done.stdout}{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert lines and lines[0].startswith("ikedlab: "), done.stderr
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), done.stderr
    return lines[0]


def domains(lab: str) -> list[str]:
    """Every libvirt domain of `lab`, running or not, as virsh sees them."""
    out = subprocess.run(
        ["virsh", "-c", URI, "list", "--all", "--name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [d for d in out.split() if d.startswith(f"ikedlab-{lab}-")]


def assert_nothing_left(lab: str, state: Path) -> None:
    """No domain of `lab` in libvirt, no state file, no disks: nothing a later `up` would trip over."""
    assert domains(lab) == [], f"domains of {lab} left behind"
    run_dir = state / "labs" / lab
    assert not (run_dir / "blueprint.json").exists(), "blueprint.json left behind"
    assert not (run_dir / "disks").exists() or not any((run_dir / "disks").iterdir()), "disks left behind"


def wait_for(what: str, condition, timeout: float, interval: float = 0.2):  # noqa: ANN001, ANN201
    """Poll until `condition()` is truthy; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g}s", pytrace=False)
        time.sleep(interval)
