"""The one way ikedlab runs programs on the host: logged, clean environment, failures explained."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lab.errors import CommandFailed

log = logging.getLogger("ikedlab.command")

# A clean, predictable environment: no locale surprises in parsed output.
_KEEP = ("PATH", "HOME", "USER", "TMPDIR", "http_proxy", "https_proxy", "no_proxy")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"
    env.update(extra or {})
    return env


def require(program: str, package: str | None = None) -> str:
    """The full path of a host program, or a clear error saying which package brings it."""
    found = shutil.which(program, path=clean_env()["PATH"])
    if not found:
        hint = f"install it: apt-get install {package}" if package else None
        raise CommandFailed(f"{program} not found", hint)
    return found


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    args = [str(a) for a in argv]
    log.debug("run: %s%s", " ".join(args), f" (in {cwd})" if cwd else "")
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            input=input,
            capture_output=True,
            timeout=timeout,
            env=clean_env(env),
        )
    except FileNotFoundError:
        raise CommandFailed(f"{args[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{args[0]} did not finish within {timeout:g}s: {' '.join(args)}") from None
    if check and done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(args[:3])}… {describe_status(done.returncode)}: {last_line(done.stderr)}"
        )
    return done


def describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited {code}"


def last_line(data: bytes) -> str:
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"
