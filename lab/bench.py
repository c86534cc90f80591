"""`make bench`: how fast and how big the lab is, on this machine. Numbers, not pass/fail.

Measures the Linux appliance build (cold, into an empty cache, and warm), `up` to an established tunnel
with each phase's time, each guest's peak memory, and the scenario suite: each scenario's median call
time and the wall time of `pytest -n 1` against `-n 2`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from lab import PROJECT_ROOT, progress, settings
from lab.images import linux_image
from lab.lab import Lab

GOAL_UP_SECONDS = 15.0
GOAL_GUEST_MIB = 128.0
GOAL_SCENARIO_SECONDS = 3.0
GOAL_ROUND_TRIP_MS = 100.0  # one framed command on a guest's control channel
GOAL_EXEC_SECONDS = 2.0  # `ikedlab exec HOST -- true`, the whole command: attach, run, detach
_CALL_LINE = re.compile(r"^\s*([0-9.]+)s call\s+(\S+)")


def bench_image() -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory(prefix="ikedlab-bench-") as cache:
        start = time.monotonic()
        image = linux_image(Path(cache))
        cold = time.monotonic() - start
        start = time.monotonic()
        linux_image(Path(cache))
        warm = time.monotonic() - start
        size = image.initrd.stat().st_size / 2**20
    lines.append(
        f"image build, cold (empty cache, packages fetched): {cold:6.1f} s   initramfs {size:.1f} MiB"
    )
    lines.append(f"image build, warm (cached):                        {warm * 1000:6.0f} ms")
    return lines


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in KiB by field name."""
    fields = (line.split() for line in text.splitlines())
    return {f[0].rstrip(":"): int(f[1]) for f in fields if len(f) >= 2 and f[1].isdigit()}


def bench_up() -> list[str]:
    linux_image()  # built (or rebuilt after a recipe change) before the clock starts
    lab = Lab("bench")
    lab.down(quiet=True)
    progress.timings.clear()
    start = time.monotonic()
    try:
        lab.up(platform=settings.SCENARIO_PLATFORM)
        total = time.monotonic() - start
        lines = [
            f"up → tunnel established (cached image):          {total:6.1f} s"
            f"   (goal ≤ {GOAL_UP_SECONDS:g} s)"
        ]
        for name, seconds in progress.timings:
            lines.append(f"    {name:<62} {seconds:5.1f} s")
        lines += bench_control_channel(lab)
        initlan = lab.host("initlan")
        initlan.ping("10.0.2.2", count=10, timeout_s=2)  # some traffic, so memory is measured in use
        for domain in lab.domains():
            peak = lab.hypervisor.peak_memory_kib(domain)
            meminfo = parse_meminfo(lab.host(domain.host).check("cat /proc/meminfo").output)
            used, total = (meminfo["MemTotal"] - meminfo["MemAvailable"]) / 1024, meminfo["MemTotal"] / 1024
            lines.append(
                f"memory of {domain.host:<8} guest: {used:5.1f} MiB in use of {total:.0f} MiB"
                f" (goal ≤ {GOAL_GUEST_MIB:g} MiB); QEMU process peak resident "
                + (f"{peak / 1024:.1f} MiB" if peak else "n/a")
            )
        return lines
    finally:
        lab.down(quiet=True)
        lab.close()


def bench_control_channel(lab: Lab) -> list[str]:
    """A command's round trip on resp's control channel, and a whole `ikedlab exec` (a process of its own)."""
    resp = lab.host("resp")
    samples = []
    for _ in range(20):
        start = time.monotonic()
        resp.run("true")
        samples.append(time.monotonic() - start)
    round_trip = statistics.median(samples) * 1000
    with lab.lent("resp"):
        start = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "lab", "--name", lab.name, "exec", "resp", "--", "true"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            check=True,
        )
        whole = time.monotonic() - start
    return [
        f"control channel round trip (`true` on resp, median of 20): {round_trip:6.0f} ms"
        f"   (goal ≤ {GOAL_ROUND_TRIP_MS:g} ms)",
        f"`ikedlab exec resp -- true`, the whole command:             {whole:6.1f} s"
        f"   (goal ≤ {GOAL_EXEC_SECONDS:g} s)",
    ]


def run_scenarios(workers: int) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="ikedlab-bench-scn-") as artifacts:
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "scenarios",
            "-q",
            "--platform",
            settings.SCENARIO_PLATFORM,
            "--artifacts",
            artifacts,
            "--durations=0",
            "--durations-min=0",
            "-n",
            str(workers),
        ]
        start = time.monotonic()
        done = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, env=os.environ.copy())
        wall = time.monotonic() - start
    calls = {m.group(2): float(m.group(1)) for m in map(_CALL_LINE.match, done.stdout.splitlines()) if m}
    if done.returncode not in (0,):
        calls["(suite exit status)"] = float(done.returncode)
    return wall, calls


def bench_scenarios() -> list[str]:
    runs: dict[str, list[float]] = defaultdict(list)
    walls = {}
    for workers in (1, 2):
        walls[workers], calls = run_scenarios(workers)
        for test, seconds in calls.items():
            runs[test].append(seconds)
    lines = [
        f"scenario suite wall time: pytest -n 1 {walls[1]:6.1f} s, -n 2 {walls[2]:6.1f} s"
        " (two labs side by side)"
    ]
    for test, samples in sorted(runs.items()):
        median = statistics.median(samples)
        flag = "" if median <= GOAL_SCENARIO_SECONDS else "   (over the 3 s goal)"
        lines.append(f"    {test.split('::')[-1]:<66} median {median:6.1f} s{flag}")
    return lines


INTEROP_SUMMARY = PROJECT_ROOT / "artifacts" / "interop" / "summary.json"


def bench_interop() -> list[str]:
    """The interop matrix's wall time. Long (one lab per cell), so it runs only when asked
    (`make bench BENCH=interop` or BENCH_INTEROP=1); otherwise the last `make interop`'s numbers."""
    if os.environ.get("BENCH_INTEROP") == "1" or "interop" in sys.argv[1:]:
        subprocess.run([sys.executable, "-m", "lab.interop"], cwd=PROJECT_ROOT, check=False)
    try:
        summary = json.loads(INTEROP_SUMMARY.read_text())
    except (OSError, ValueError):
        return ["not measured: run `make interop` (or `make bench BENCH=interop`)"]
    lines = [f"matrix wall time {summary['wall_seconds']:6.0f} s   (last run {summary['finished']})"]
    for cell, info in summary["cells"].items():
        counts: dict[str, int] = defaultdict(int)
        for outcome in info["results"].values():
            counts[outcome] += 1
        shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or info["note"]
        lines.append(f"    {cell:<28} {info['wall_seconds']:6.0f} s   {shown}")
    return lines


def main() -> int:
    progress.set_quiet(True)
    sections = [
        ("Linux appliance image", bench_image),
        ("Lab up", bench_up),
        ("Scenarios", bench_scenarios),
        ("Interop matrix (optional: BENCH=interop runs it)", bench_interop),
    ]
    only = sys.argv[1:]
    for title, function in sections:
        if only and title.split()[0].lower() not in only:
            continue
        print(f"== {title}", flush=True)
        for line in function():
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
