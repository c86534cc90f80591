"""The `ikedlab` commands about what ikedlab keeps on this machine: the labs (`list`), their warm snapshots
(`snapshot list|rm`), what deleted checkouts left behind (`prune`), golden images (`image build`). Thin, like
lab/cli.py: the work is in lab.snapshot, lab.prune, lab.images (through each platform)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lab import settings
from lab.errors import IkedlabError


def add_commands(sub: Any) -> None:
    snap = sub.add_parser("snapshot", help="warm snapshots: list them, remove them")
    snap.set_defaults(handler=cmd_snapshot)
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    snap_sub.add_parser("list", help="every lab's snapshot: size, age, inputs")
    rm = snap_sub.add_parser("rm", help="delete this lab's snapshot (--name), or every one with --all")
    rm.add_argument("--all", action="store_true")
    sub.add_parser(
        "prune",
        help="remove the labs and warm snapshots of checkouts that no longer exist (never a live run's lab)",
    ).set_defaults(handler=cmd_prune)
    sub.add_parser("list", help="the labs that exist").set_defaults(handler=cmd_list)

    image = sub.add_parser("image", help="golden images")
    image.set_defaults(handler=cmd_image)
    image_sub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = image_sub.add_parser("build", help="build (or reuse) a golden image")
    build.add_argument("--platform", default=settings.IMAGE_PLATFORM)
    build.add_argument(
        "--release",
        default=settings.OPENBSD_RELEASE,
        help=f"OpenBSD release (default {settings.OPENBSD_RELEASE}), or snapshots: OpenBSD -current from "
        "snapshots/amd64, verified with the next release's key, one image per build date",
    )
    build.add_argument("--iso", type=Path, help="OpenBSD install ISO already on disk (SHA256.sig beside it)")
    build.add_argument("--sig", type=Path, help="SHA256.sig for --iso, when it is not beside the ISO")
    build.add_argument("--mirror", help="OpenBSD mirror URL")
    build.add_argument(
        "--signify-key",
        type=Path,
        help="the release's signify base public key (7.5 to 8.0 ship with ikedlab)",
    )
    build.add_argument(
        "--insecure", action="store_true", help="accept media whose signature cannot be verified"
    )
    build.add_argument("--rebuild", action="store_true")


def cmd_snapshot(args: argparse.Namespace) -> int:
    from lab import snapshot

    if args.snapshot_command == "rm":
        names = (
            [s.lab for s in snapshot.all_snapshots() if isinstance(s, snapshot.Snapshot)]
            if args.all
            else [args.name]
        )
        for name in names:
            removed = snapshot.remove(name)
            print(f"lab '{name}': {'snapshot removed' if removed else 'no snapshot'}")
        return 0
    from lab.budget import age, describe, last_used
    from lab.prune import checkout_of, is_gone

    print(describe())
    gone = 0.0
    for found in snapshot.all_snapshots():
        if isinstance(found, IkedlabError):
            print(f"? {found.message}")
            continue
        made, used = age(time.time() - found.created), age(time.time() - last_used(found))
        inputs = ", ".join(f"{k} {v}" for k, v in found.summary.items())
        size = found.size / 2**20
        checkout = checkout_of(found.lab)
        if is_gone(checkout):
            gone += size
        where = f"{checkout} (gone)" if is_gone(checkout) else checkout or "?"
        print(
            f"{found.lab:<20} {size:7.1f} MiB  {made:>6} old, used {used:>6} ago  key {found.key[:12]}  "
            f"checkout {where}  {inputs}"
        )
    if gone:
        print(f"{gone:.0f} MiB of checkouts that are gone: `ikedlab prune` removes them and their labs")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from lab.prune import leftovers, prune

    if not leftovers():
        print("nothing to prune: every lab and snapshot belongs to a checkout that exists")
        return 0
    removed = prune()
    freed = sum(left.size for left in removed) / 2**20
    print(f"{len(removed)} lab{'s' if len(removed) != 1 else ''} removed, {freed:.0f} MiB freed")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from lab.lab import lab_names

    for name in lab_names():
        print(name)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from lab.platforms import get_platform

    platform = get_platform(args.platform)  # an unknown name: one line listing the known ones
    print(
        platform.build_image(
            release=args.release,
            iso=args.iso,
            mirror=args.mirror,
            signify_key=args.signify_key,
            insecure=args.insecure,
            rebuild=args.rebuild,
            sig=args.sig,
        )
    )
    return 0
