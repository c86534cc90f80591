"""What the Vagrantfile needs from ikedlab: the rendered per-host files, plus a summary it can read.

Vagrant (vagrant-libvirt) gives every guest a management NIC of its own, and it is always the first one: on
an OpenBSD box that is vio0. The lab's interfaces therefore start at vio1. Rather than renaming files after
the fact, the lab is rendered by the box's own platform told that one NIC comes before the lab's
(`Platform.with_leading_nics`), so hostname.vioN, the `netstart` arguments and anything else that names an
interface come out right from the same code path `ikedlab render` uses. A platform has a box when its data
file names one (`vagrant_box`).

    python -m lab.vagrant render --out .vagrant/ikedlab-render [--topology FILE]

writes OUT/HOST/files/..., OUT/HOST/provision.sh (the provisioning plan, lab/plan.py, as `ikedlab render`
writes it) and OUT/lab.json: the hosts in topology order, their interfaces in NIC order, the links, the
gateways' key-exchange facts and the order iked starts in, all from the same plan.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from lab import private, settings
from lab.errors import IkedlabError
from lab.placement import load_topology
from lab.plan import Plan, build_plan, write_plan
from lab.platforms import Platform, get_platform, platform_names

SUMMARY = "lab.json"

#: NICs Vagrant puts before the lab's own on every guest (its management network).
VAGRANT_NICS = 1


def vagrant_platform(name: str) -> Platform:
    """Platform `name` as a Vagrant box runs it: its lab interfaces after Vagrant's management NIC."""
    platform = get_platform(name)
    if not platform.facts.vagrant_box:
        known = ", ".join(n for n in platform_names() if get_platform(n).facts.vagrant_box)
        raise IkedlabError(f"the Vagrantfile has no box for platform '{name}' (it supports: {known})")
    return platform.with_leading_nics(VAGRANT_NICS)


def vagrant_plan(topology_path: Path | None, platform: str) -> Plan:
    """The provisioning plan of the lab on Vagrant boxes of `platform` (one box for every host)."""
    topology = load_topology(topology_path)
    box = vagrant_platform(platform)
    for host in topology.hosts.values():
        if host.platform not in (None, platform):
            raise IkedlabError(
                f"host '{host.name}' asks for platform '{host.platform}'; the Vagrantfile runs one box "
                f"for all hosts ({platform})"
            )
    return build_plan(topology, {name: box for name in topology.hosts})


def render_summary(plan: Plan, out: Path) -> Path:
    """Write OUT/lab.json describing the plan written under OUT (write_plan) for the Vagrantfile.

    "files" lists every file under OUT/HOST (relative to it), so the Vagrantfile and its test never restate
    them; the gateways' facts and "start_order" are the plan's, for the key exchange and iked's start.
    """
    topology = plan.topology
    hosts: dict[str, Any] = {}
    for host in topology.hosts.values():
        dialect = plan.hosts[host.name].platform
        root = out / host.name
        entry: dict[str, Any] = {
            "dir": host.name,
            "provision": "provision.sh",
            "phases": list(plan.hosts[host.name].steps),
            "files": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
            "interfaces": [
                {
                    "name": dialect.interface_name(iface.index),
                    "link": iface.link,
                    "address": str(iface.address.ip),
                    "netmask": str(iface.address.netmask),
                    "prefixlen": iface.address.network.prefixlen,
                }
                for iface in host.interfaces
            ],
            "gateway": str(host.gateway) if host.gateway else None,
            "ipsec": None,
        }
        if host.ipsec:
            entry["ipsec"] = {
                "peer": host.ipsec.peer,
                "mode": host.ipsec.mode,
                "srcid": host.ipsec.srcid,
                "public_key": dialect.public_key,
                # Where this gateway keeps its peer's public key: named after the peer's srcid.
                "peer_pubkey_path": plan.peer_key_path(host.name),
                "ike_conf": dialect.ike_conf,
                "ike_check": dialect.ike_check_command(),
                "ike_start": dialect.ike_start_command(),
                "ike_stop": dialect.ike_stop_command(),
            }
        hosts[host.name] = entry
    first = next(iter(plan.hosts.values())).platform
    summary = {
        "topology": str(topology.path),
        "platform": first.name,
        "box": first.facts.vagrant_box,
        "interface_offset": first.facts.interface_offset,
        "start_order": plan.start_order(),
        "hosts": hosts,
        "links": {
            link.name: {
                "subnet": str(link.subnet),
                "netmask": str(link.subnet.netmask),
                "ends": {h: str(a) for h, a in link.ends.items()},
            }
            for link in topology.links.values()
        },
    }
    path = out / SUMMARY
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def render(topology_path: Path | None, platform: str, out: Path) -> Path:
    """Render the lab for Vagrant into `out` and return its lab.json.

    The new render is made beside `out` and swapped in only when it differs, so a `vagrant ssh` run while
    `vagrant up` uploads from `out` leaves the files under it alone. `out` is only ever replaced when it is
    empty or holds an earlier render (a lab.json): never a folder of someone else's.
    """
    plan = vagrant_plan(topology_path, platform)  # every problem found before anything is written
    out = out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / SUMMARY).is_file():
        raise IkedlabError(f"{out} exists and is not an ikedlab render (no {SUMMARY}); choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    fresh.chmod(0o755)  # mkdtemp makes it 0700; the render is nothing secret
    try:
        write_plan(plan, fresh)
        render_summary(plan, fresh)
        # lab.json names the topology by path and so is compared too: a different file means a new render.
        if out.exists() and _same_tree(fresh, out):
            return out / SUMMARY
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return out / SUMMARY
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def main(argv: list[str] | None = None) -> int:
    private.restrict_umask()
    p = argparse.ArgumentParser(prog="python -m lab.vagrant", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render every host's files and OUT/lab.json for the Vagrantfile")
    r.add_argument("--topology", type=Path, help="a topology file (default: the guide's lab)")
    r.add_argument(
        "--platform", default=settings.PLATFORM, help=f"the box's OS (default: {settings.PLATFORM})"
    )
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        print(render(args.topology, args.platform, args.out))
    except IkedlabError as e:
        print("\n".join(e.lines()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
