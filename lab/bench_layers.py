"""`make bench BENCH=base` (and `bisect`): what the booted base (lab/base.py) buys, against `--cold` in the
same run. Each `up` from the base is timed from the base's restore to the established tunnel; the cold one
to the tunnel too (its saves and proving restores apart), so the two compare like for like.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from lab import progress, settings
from lab.blueprint import UpRequest
from lab.images import default_cache_dir, linux_image
from lab.images.iked_build import build_iked, debian_source
from lab.lab import Lab, UpResult
from lab.platforms import DaemonChoice

GOAL_BASE_SECONDS = 10.0  # base restore -> tunnel, quiet machine
GOAL_BASE_SPEEDUP = 3.0  # against a cold up to the tunnel
#: Steps of a cold `up` that are not the way to the tunnel: its saves, the restores proving them.
NOT_TO_THE_TUNNEL = ("snapshot", "restore", "verify", "base")


def source_tree() -> Path:
    """Debian's openiked source (7.4, trixie's), fetched once into the cache and built once."""
    tree = debian_source(default_cache_dir() / "bench-source")
    build_iked(tree)
    return tree


def to_tunnel(result: UpResult) -> float:
    return progress.total([t for t in result.timings if not t.name.startswith(NOT_TO_THE_TUNNEL)])


#: A figure beside its goal (lab/bench.py's `row` lays it out), or a line of its own.
Line = tuple[str, str, str] | str


def row(what: str, value: str, goal: str = "") -> Line:
    return (what, value, goal)


def bench_base() -> list[Line]:
    """Up from the booted base after a change above it, each against --cold in the same run."""
    linux_image()
    linux_image(variant="trixie")
    tree = source_tree()  # before any clock starts
    name = "bench-base"
    lab = Lab(name)
    lab.down(quiet=True, snapshots=True)
    lines: list[Line] = []
    try:
        cold = lab.up(UpRequest(platform=settings.SCENARIO_PLATFORM, cold=True))
        cold_tunnel = to_tunnel(cold)
        lines.append(
            row("cold up → tunnel (--cold, base and snapshot saved on the way)", f"{cold_tunnel:6.1f} s")
        )
        gateways = [g.name for g in lab.read().topology.gateways]
        with tempfile.TemporaryDirectory(prefix="ikedlab-bench-") as tmp:
            changed = Path(tmp) / "resp.iked.conf"
            resp = lab.read().plan.hosts["resp"].ike_conf
            assert resp
            changed.write_text(resp.content + "# changed: an input above the booted base\n")
            cases = [
                ("up --iked-conf resp=CHANGED", UpRequest(ike_conf_files={"resp": changed})),
                (
                    "up --iked-source TREE (build cached)",
                    UpRequest(iked={g: DaemonChoice(source=tree) for g in gateways}),
                ),
                # iked 7.4 is another image (trixie's): its first `up` boots cold and saves a base of its own.
                ("up --iked-version init=7.4, first", UpRequest(iked={"init": DaemonChoice("7.4")})),
                (
                    "up --iked-version init=7.4 --iked-conf resp=CHANGED, after it",
                    UpRequest(iked={"init": DaemonChoice("7.4")}, ike_conf_files={"resp": changed}),
                ),
            ]
            for what, request in cases:
                lab.down(quiet=True)
                lab.close()
                lab = Lab(name)
                request = dataclasses.replace(request, platform=settings.SCENARIO_PLATFORM)
                result = lab.up(request)
                lines += _based(what, result, cold_tunnel)
    finally:
        lab.down(quiet=True, snapshots=True)
        lab.close()
    return lines


def _based(what: str, result: UpResult, cold_tunnel: float) -> list[Line]:
    if result.based_in is None:
        how = (
            "restored its snapshot"
            if result.restored
            else f"booted cold, {to_tunnel(result):.1f} s to the tunnel"
        )
        return [row(f"{what}: not from the base", f"({how})")]
    speedup = cold_tunnel / result.based_in
    lines: list[Line] = [
        row(f"{what}: base restore → tunnel", f"{result.based_in:6.1f} s", f"≤ {GOAL_BASE_SECONDS:g} s"),
        row("    against --cold → tunnel", f"{speedup:6.1f}× faster", f"≥ {GOAL_BASE_SPEEDUP:g}×"),
    ]
    return lines + [f"    {t.name:<62} {t.seconds:5.1f} s" for t in result.timings]


def bench_bisect() -> list[Line]:
    """One `ikedlab bisect` step as a walk takes it: a tree never built before (one line changed), then the
    lab up from its booted base with that build and the catalogue's transport case."""
    import time

    from lab.bisect import Case, lab_tester

    tree = source_tree()
    name = "bench-bisect"
    lab = Lab(name)
    lab.down(quiet=True, snapshots=True)
    lab.close()
    test = lab_tester(name, Case(catalogue="transport"))
    with tempfile.TemporaryDirectory(prefix="ikedlab-bench-bisect-") as tmp:
        try:
            test(tree, "warm-up", Path(tmp))  # the lab's booted base (a cold up), untimed
            changed = Path(tmp) / "openiked"
            shutil.copytree(tree, changed)
            with open(changed / "iked" / "iked.c", "a") as f:
                f.write(f"\n/* bench {time.time()} */\n")
            started = time.monotonic()
            build_iked(changed)
            built = time.monotonic() - started
            verdict, why = test(changed, "bench", Path(tmp))
            step = time.monotonic() - started
        finally:
            Lab(name).down(quiet=True, snapshots=True)
    return [
        row("bisect step: build, up from the base, the transport case", f"{step:6.1f} s"),
        f"    build of a tree changed by one line: {built:.1f} s; up and the case: {step - built:.1f} s"
        f" ({verdict.word}: {why})",
    ]
