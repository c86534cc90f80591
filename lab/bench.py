"""`make bench`: how fast and how big the lab is, on this machine. Numbers, not pass/fail.

Measures the Linux appliance build (cold, into an empty cache, and warm), a cold `up` to an established
tunnel with each phase's time, the warm snapshot it saves (time, size) and a warm `up` restoring it, each
guest's memory, `make lab-up` twice as a learner types it, exercises started and first checked as a learner
types them, the scenario suite (each scenario's median call time, `pytest -n 1` against `-n 2`) and
`make test`. Each figure is printed beside its goal.
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

from lab import PROJECT_ROOT, bench_layers, private, progress, settings, snapshot
from lab.bench_layers import NOT_TO_THE_TUNNEL
from lab.blueprint import UpRequest
from lab.images import linux_image
from lab.lab import Lab
from lab.provision import start_ike, stop_ike, wait_for_tunnel

GOAL_UP_SECONDS = 15.0
GOAL_GUEST_MIB = 128.0
GOAL_SCENARIO_SECONDS = 3.0
GOAL_ROUND_TRIP_MS = 100.0  # one framed command on a guest's control channel
GOAL_EXEC_SECONDS = 0.5  # `ikedlab exec HOST -- true`, the whole command: imports, attach, run, detach
GOAL_RESTORE_SECONDS = 3.0
GOAL_WARM_MAKE_SECONDS = 10.0
GOAL_WARM_SPEEDUP = 5.0
GOAL_MAKE_TEST_SECONDS = 240.0
GOAL_XDIST_SPEEDUP = 1.6
GOAL_WALKTHROUGH_SECONDS = 60.0  # docs/walkthrough.md run whole, on a lab that is up
GOAL_EXERCISE_SECONDS = 10.0  # `exercise start NAME` then the first `exercise check`, on a warm lab
#: Exercises timed from start to the first check: one fault on one gateway, one kernel setting, one that
#: restarts both gateways (the slowest kind of fault to put in: the passive side's start-up comes first).
BENCH_EXERCISES = ("wrong-srcid", "forwarding-off", "flows-mismatch")
SLOW_RESTART_SECONDS = 30.0  # iked restarted on both gateways: slower than this means a lost first exchange
RESTARTS = 20
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


def row(what: str, value: str, goal: str = "") -> str:
    """One figure, aligned, beside its goal."""
    return f"{what:<52} {value}" + (f"   (goal {goal})" if goal else "")


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in KiB by field name."""
    fields = (line.split() for line in text.splitlines())
    return {f[0].rstrip(":"): int(f[1]) for f in fields if len(f) >= 2 and f[1].isdigit()}


def bench_up() -> list[str]:
    """Cold `up` to the tunnel (phases), the snapshot it saves, then a warm `up` restoring it."""
    linux_image()  # built (or rebuilt after a recipe change) before the clock starts
    lab = Lab("bench")
    lab.down(quiet=True, snapshots=True)
    try:
        cold = lab.up(UpRequest(platform=settings.SCENARIO_PLATFORM, cold=True))
        total = cold.seconds
        provisioning = [t for t in cold.timings if not t.name.startswith(NOT_TO_THE_TUNNEL)]
        saving = [t for t in cold.timings if t not in provisioning]
        tunnel = progress.total(provisioning)
        lines = [
            row("cold up → tunnel established (cached image)", f"{tunnel:6.1f} s", f"≤ {GOAL_UP_SECONDS:g} s")
        ]
        lines += [f"    {t.name:<62} {t.seconds:5.1f} s" for t in provisioning]
        lines.append(
            f"then saved (booted base, warm snapshot) and handed back: {total - tunnel:6.1f} s"
            " (at once: the cut must be the provisioned state, before anyone touches the lab;"
            " in the background the same seconds would freeze the learner's lab and replace its consoles)"
        )
        lines += [f"    {t.name:<62} {t.seconds:5.1f} s" for t in saving]
        lines += bench_control_channel(lab)
        initlan = lab.host("initlan")
        initlan.ping("10.0.2.2", count=10, timeout_s=2)  # some traffic, so memory is measured in use
        for domain in lab.domains():
            peak = lab.hypervisor.peak_memory_kib(domain)
            meminfo = parse_meminfo(lab.host(domain.host).check("cat /proc/meminfo").output)
            used, size = (meminfo["MemTotal"] - meminfo["MemAvailable"]) / 1024, meminfo["MemTotal"] / 1024
            lines.append(
                f"memory of {domain.host:<8} guest: {used:5.1f} MiB in use of {size:.0f} MiB"
                f" (goal ≤ {GOAL_GUEST_MIB:g} MiB); QEMU process peak resident "
                + (f"{peak / 1024:.1f} MiB" if peak else "n/a")
            )
        lab.down(quiet=True)
        lab.close()
        lab = Lab("bench")
        warm = lab.up(UpRequest(platform=settings.SCENARIO_PLATFORM))
        restored = f"{warm.restored_in:6.1f} s" if warm.restored_in is not None else "  (not restored!)"
        lines.append(
            row("warm up: restore → tunnel verified (one ping)", restored, f"≤ {GOAL_RESTORE_SECONDS:g} s")
        )
        lines += [f"    {t.name:<62} {t.seconds:5.1f} s" for t in warm.timings]
        snap = snapshot.load(lab.name)
        if snap:
            per_host = ", ".join(f"{h} {snap.memory_image(h).stat().st_size / 2**20:.0f}" for h in snap.hosts)
            lines.append(f"snapshot on disk: {snap.size / 2**20:.0f} MiB per lab ({per_host} MiB)")
        started = time.monotonic()
        lab.reset()
        lines.append(f"reset of a running lab from its snapshot:         {time.monotonic() - started:6.1f} s")
        return lines
    finally:
        lab.down(quiet=True, snapshots=True)
        lab.close()


def bench_base() -> list[str]:
    return [line if isinstance(line, str) else row(*line) for line in bench_layers.bench_base()]


def bench_bisect() -> list[str]:
    return [line if isinstance(line, str) else row(*line) for line in bench_layers.bench_bisect()]


def restart_seconds(lab: Lab, count: int = RESTARTS) -> list[float]:
    """iked stopped and started again on both gateways `count` times: seconds from the start to the tunnel."""
    gateways = lab.gateways()
    seconds = []
    for _ in range(count):
        stop_ike(gateways)
        start = time.monotonic()
        start_ike(gateways, lab.plan())
        wait_for_tunnel(gateways)
        seconds.append(time.monotonic() - start)
    return seconds


def bench_restarts() -> list[str]:
    """The iked start-up race: how often a restart of both gateways takes longer than one clean exchange."""
    lab = Lab("bench-restart")
    lab.down(quiet=True)
    try:
        lab.up(UpRequest(platform=settings.SCENARIO_PLATFORM, save_snapshot=False))
        seconds = restart_seconds(lab)
    finally:
        lab.down(quiet=True)
        lab.close()
    slow = [s for s in seconds if s > SLOW_RESTART_SECONDS]
    return [
        row(
            f"iked restarted on both gateways, start → tunnel ({len(seconds)}×)",
            f"median {statistics.median(seconds):5.1f} s, max {max(seconds):5.1f} s",
        ),
        row(f"    restarts over {SLOW_RESTART_SECONDS:g} s", f"{len(slow)} of {len(seconds)}", "0"),
        f"    load average {os.getloadavg()[0]:.1f} (2 cores, shared)",
    ]


def bench_make_lab_up() -> list[str]:
    """What a learner types twice: `make lab-up PLATFORM=linux` cold, then again after `make lab-down`."""
    make = ["make", "--no-print-directory", "PLATFORM=linux", "NAME=bench-make"]
    subprocess.run([*make, "lab-down"], cwd=PROJECT_ROOT, capture_output=True)
    snapshot.remove("bench-make")
    walls = []
    said = ""
    try:
        for _ in range(2):
            start = time.monotonic()
            done = subprocess.run([*make, "lab-up"], cwd=PROJECT_ROOT, capture_output=True, text=True)
            walls.append(time.monotonic() - start)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                return [f"make lab-up failed ({tail})"]
            said = done.stderr
            subprocess.run([*make, "lab-down"], cwd=PROJECT_ROOT, capture_output=True)
    finally:
        subprocess.run([*make, "lab-down"], cwd=PROJECT_ROOT, capture_output=True)
        snapshot.remove("bench-make")
    cold, warm = walls
    lines = [
        row("make lab-up PLATFORM=linux, first (cold, saves)", f"{cold:6.1f} s"),
        row("make lab-up PLATFORM=linux, second (warm)", f"{warm:6.1f} s", f"≤ {GOAL_WARM_MAKE_SECONDS:g} s"),
        row("    second vs first", f"{cold / warm:6.1f}× faster", f"≥ {GOAL_WARM_SPEEDUP:g}×"),
    ]
    # Where the second one's time went: its phases as it printed them, and what is left outside the restore.
    restored = re.search(r"restored warm snapshot of lab '[^']+' in ([0-9.]+) s", said)
    lines += [
        f"    {line.strip()}"
        for line in said.splitlines()
        if line.startswith(("✓", "  restore:", "  verify:"))
    ]
    if restored:
        outside = warm - float(restored.group(1))
        lines.append(row("    outside the restore (make, setup, Python, status table)", f"{outside:6.1f} s"))
    else:
        lines.append("    the second make lab-up did not restore (its output says why)")
    started = time.monotonic()
    subprocess.run(["make", "--no-print-directory", "setup"], cwd=PROJECT_ROOT, capture_output=True)
    lines.append(
        row(
            "    of which `make setup` (host packages, venv: all present)",
            f"{time.monotonic() - started:6.1f} s",
        )
    )
    return lines


def bench_make_test() -> list[str]:
    start = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "test"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    wall = time.monotonic() - start
    status = "passed" if done.returncode == 0 else f"exit {done.returncode}"
    return [
        row(
            f"make test (fast + scenarios, cached images; {status})",
            f"{wall:6.1f} s",
            f"≤ {GOAL_MAKE_TEST_SECONDS:g} s",
        )
    ]


def bench_control_channel(lab: Lab) -> list[str]:
    """A command's round trip on resp's control channel, and a whole `ikedlab exec` (a process of its own)."""
    resp = lab.host("resp")
    samples = []
    for _ in range(20):
        start = time.monotonic()
        resp.run("true")
        samples.append(time.monotonic() - start)
    round_trip = statistics.median(samples) * 1000
    wholes = []
    with lab.lent("resp"):
        for _ in range(10):
            start = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "lab", "--name", lab.name, "exec", "resp", "--", "true"],
                cwd=PROJECT_ROOT,
                capture_output=True,
                check=True,
            )
            wholes.append(time.monotonic() - start)
    whole = statistics.median(wholes)
    return [
        f"control channel round trip (`true` on resp, median of 20): {round_trip:6.0f} ms"
        f"   (goal ≤ {GOAL_ROUND_TRIP_MS:g} ms)",
        f"`ikedlab exec resp -- true`, the whole command, median of 10: {whole:6.2f} s"
        f" ({min(wholes):.2f}–{max(wholes):.2f}; load {_load()})   (goal ≤ {GOAL_EXEC_SECONDS:g} s)",
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
        # Scenario labs keep their warm snapshots between runs: the first run ever of each pays a cold up.
        walls[workers], calls = run_scenarios(workers)
        for test, seconds in calls.items():
            runs[test].append(seconds)
    lines = [
        f"scenario suite wall time: pytest -n 1 {walls[1]:6.1f} s, -n 2 {walls[2]:6.1f} s"
        " (two labs side by side)",
        f"    -n 2 vs -n 1: {walls[1] / walls[2]:4.2f}× faster   (goal ≥ {GOAL_XDIST_SPEEDUP:g}×)",
    ]
    for test, samples in sorted(runs.items()):
        median = statistics.median(samples)
        flag = "" if median <= GOAL_SCENARIO_SECONDS else "   (over the 3 s goal)"
        lines.append(f"    {test.split('::')[-1]:<66} median {median:6.1f} s{flag}")
    walk = [statistics.median(v) for t, v in runs.items() if "test_walkthrough" in t]
    if walk:
        lines.append(
            f"docs/walkthrough.md, all {len(walk)} steps on a running lab: {sum(walk):6.1f} s"
            f"   (goal ≤ {GOAL_WALKTHROUGH_SECONDS:g} s)"
        )
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


def bench_exercises() -> list[str]:
    """A learner's loop as typed: `exercise start NAME`, then `exercise check` (each a process of its own),
    on a lab that is up and warm; then `exercise stop`."""
    name = "bench-exercise"
    lab = Lab(name)
    lab.down(quiet=True)
    ikedlab = [sys.executable, "-m", "lab", "--name", name, "exercise"]
    lines = []
    try:
        lab.up(UpRequest(platform=settings.SCENARIO_PLATFORM))
        lab.close()  # the learner's commands are other processes
        for exercise in BENCH_EXERCISES:
            walls = []
            for argv in (["start", exercise], ["check"], ["stop"]):
                started = time.monotonic()
                done = subprocess.run([*ikedlab, *argv], cwd=PROJECT_ROOT, capture_output=True, text=True)
                walls.append(time.monotonic() - started)
                if argv == ["check"] and done.returncode == 0:
                    return [f"exercise {exercise}: `check` found it repaired right after `start`"]
                if argv != ["check"] and done.returncode != 0:
                    return [f"exercise {' '.join(argv)} failed: {done.stderr.strip()}"]
            start, check, stop = walls
            lines.append(
                row(
                    f"exercise {exercise}: start → first check",
                    f"{start + check:6.1f} s (start {start:.1f}, check {check:.1f}, stop {stop:.1f})",
                    f"≤ {GOAL_EXERCISE_SECONDS:g} s",
                )
            )
    finally:
        lab = Lab(name)
        lab.down(quiet=True)
        lab.close()
    return lines


CATALOGUE_SUMMARY = PROJECT_ROOT / "artifacts" / "catalogue" / "summary.json"
GOAL_CASE_SECONDS = 20.0  # one catalogue case on a warm lab: restore + configuration + tunnel + checks
GOAL_CATALOGUE_SECONDS = 15 * 60.0  # the whole catalogue on one cell


def bench_catalogue() -> list[str]:
    """The catalogue on the default cell: each case's median time and the cell's wall time, beside their
    goals. Long, so it runs only when asked (`make bench BENCH=catalogue`); else the last run's numbers."""
    if "catalogue" in sys.argv[1:]:
        subprocess.run(
            [sys.executable, "-m", "lab.catalogue.cells", "--cells", "iked-7.2"],
            cwd=PROJECT_ROOT,
            check=False,
        )
    try:
        summary = json.loads(CATALOGUE_SUMMARY.read_text())
    except (OSError, ValueError):
        return ["not measured: run `make catalogue` (or `make bench BENCH=catalogue`)"]
    lines = [f"last run {summary['finished']}, load {' '.join(map(str, summary.get('load', [])))} at its end"]
    for cell, info in summary["cells"].items():
        ran = {n: r for n, r in info["results"].items() if r["verdict"] != "skipped"}
        if not ran:
            lines.append(f"    {cell:<22} {info['note'] or 'no case ran'}")
            continue
        median = statistics.median(r["seconds"] for r in ran.values())
        phases: dict[str, list[float]] = defaultdict(list)
        for r in ran.values():
            for phase, seconds in r.get("phases", {}).items():
                phases[phase].append(seconds)
        counts: dict[str, int] = defaultdict(int)
        for r in info["results"].values():
            counts[r["verdict"]] += 1
        lines.append(
            f"    {cell:<22} per case, median of {len(ran)}: {median:5.1f} s"
            f"   (goal ≤ {GOAL_CASE_SECONDS:g} s); "
            f"wall {info['wall_seconds']:5.0f} s   (goal ≤ {GOAL_CATALOGUE_SECONDS:g} s on one cell); "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        )
        if phases:
            lines.append(
                "        phases, median: "
                + ", ".join(f"{p} {statistics.median(v):.1f} s" for p, v in phases.items())
            )
    return lines


def _load() -> str:
    """The machine's load average (1, 5, 15 min): the figures mean little without it on a shared machine."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    private.restrict_umask()
    progress.set_quiet(True)
    sections = [
        ("image", "Linux appliance image", bench_image),
        ("up", "Lab up: cold, saved, restored warm", bench_up),
        ("base", "From the booted base: a changed iked.conf, a local build, iked 7.4", bench_base),
        ("bisect", "A bisect step: a new build, up from the base, a catalogue case", bench_bisect),
        ("make-lab-up", "make lab-up, twice", bench_make_lab_up),
        ("restarts", "iked restarts (the start-up race)", bench_restarts),
        ("scenarios", "Scenarios", bench_scenarios),
        ("exercises", "Exercises: start → first check, as a learner types them", bench_exercises),
        ("make-test", "make test", bench_make_test),
        ("interop", "Interop matrix (optional: BENCH=interop runs it)", bench_interop),
        (
            "catalogue",
            "Regression catalogue (optional: BENCH=catalogue runs it on iked-7.2)",
            bench_catalogue,
        ),
    ]
    only = sys.argv[1:]  # e.g. `python -m lab.bench up make-lab-up`
    for key, title, function in sections:
        if only and key not in only:
            continue
        print(f"== {title}   (load average {_load()} before)", flush=True)
        for line in function():
            print(line, flush=True)
        print(f"   (load average {_load()} after)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
