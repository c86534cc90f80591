"""The `ikedlab` commands for bug reproducers and CI: bundle, capture, impair, reconfigure, traffic, rekey,
and what `up --from` / `up --expect-failure` add to `up`. Thin, like lab/cli.py: the work is in the modules
named after each concept (bundle, capture, impair, reconfigure, traffic, failure)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import gate, progress
from lab.errors import IkedlabError, LabError
from lab.ownership import ikedlab_for

if TYPE_CHECKING:
    from lab.blueprint import UpRequest
    from lab.host import Host
    from lab.lab import Lab
    from lab.platforms import DaemonChoice


def add_up_options(up: argparse.ArgumentParser) -> None:
    up.add_argument(
        "--from",
        dest="from_bundle",
        type=Path,
        metavar="BUNDLE",
        help="rebuild the lab an `ikedlab bundle` archive describes (says first what differs here)",
    )
    up.add_argument(
        "--expect-failure",
        nargs="?",
        const="",
        metavar="PATTERN",
        help="succeed as soon as a gateway's iked log matches PATTERN (any iked error when omitted); "
        "fail if the tunnel comes up",
    )


def add_commands(sub: Any) -> None:
    bundle = sub.add_parser("bundle", help="one archive of the lab's evidence, for a bug report")
    bundle.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: in the lab's run dir")
    bundle.add_argument(
        "--show-secrets",
        action="store_true",
        default=argparse.SUPPRESS,  # the global flag's value stands unless given here
        help="the users' iked.conf files byte for byte and SA keys in clear: not for publishing",
    )
    bundle.set_defaults(handler=on_lab(cmd_bundle))

    capture = sub.add_parser("capture", help="a live pcap of a link (stream it: -w - | wireshark -k -i -)")
    capture.add_argument("link")
    capture.add_argument("-w", dest="write", metavar="FILE|-", help="write the pcap here; - is stdout")
    capture.add_argument("--seconds", type=float, help="stop after this long (default: at Ctrl-C)")
    capture.add_argument("--at", metavar="HOST", help="which end of the link (default: the router's)")
    capture.set_defaults(handler=on_lab(cmd_capture))

    impair = sub.add_parser("impair", help="loss, delay, rate, MTU on a link, applied by the router inet")
    impair.add_argument("link", nargs="?")
    impair.add_argument("--loss", type=float, default=0.0, metavar="PERCENT", help="each direction")
    impair.add_argument("--delay", type=int, default=0, metavar="MS", help="each direction")
    impair.add_argument("--jitter", type=int, default=0, metavar="MS")
    impair.add_argument("--rate", metavar="RATE", help="e.g. 1mbit, 500kbit")
    impair.add_argument("--mtu", type=int, metavar="N", help="the router's MTU on the link")
    impair.add_argument(
        "--clear", action="store_true", help="remove the impairment (of every link without LINK)"
    )
    impair.set_defaults(handler=on_lab(cmd_impair))

    reconf = sub.add_parser("reconfigure", help="swap a gateway's iked.conf in the running lab")
    reconf.add_argument("host")
    reconf.add_argument("--iked-conf", type=Path, required=True, metavar="FILE")
    reconf.set_defaults(handler=on_lab(cmd_reconfigure))

    traffic = sub.add_parser("traffic", help="echo requests from one host to another; counts the loss")
    traffic.add_argument("source", metavar="FROM")
    traffic.add_argument("destination", metavar="TO", help="a host of the lab or an address")
    amount = traffic.add_mutually_exclusive_group(required=True)
    amount.add_argument("--bytes", type=int, dest="nbytes", metavar="N")
    amount.add_argument("--seconds", type=float)
    traffic.add_argument("--size", type=int, default=1000, help="payload bytes per packet (default 1000)")
    traffic.set_defaults(handler=on_lab(cmd_traffic))

    rekey = sub.add_parser("rekey", help="make iked rekey the child SAs (and the IKE SA) soon, and wait")
    rekey.add_argument("--child-seconds", type=int, default=20, help="child SA lifetime (default 20)")
    rekey.add_argument("--ike-seconds", type=int, default=0, help="IKE SA lifetime (default: not rekeyed)")
    rekey.add_argument("--child-bytes", metavar="SIZE", help="child SA byte lifetime, iked's spelling: 64K")
    rekey.add_argument("--stop", action="store_true", help="back to iked's normal lifetimes")
    rekey.set_defaults(handler=on_lab(cmd_rekey))

    case = sub.add_parser(
        "case",
        help="turn a bug report's bundle into a regression case (scenarios/cases/NAME, docs/catalogue.md)",
    )
    case.add_argument(
        "case_name", metavar="NAME", help="the case's folder name: lower-case letters, digits, '-'"
    )
    case.add_argument("--from", dest="bundle", type=Path, required=True, metavar="BUNDLE")
    case.add_argument("--cases", type=Path, help="where case folders live (default: this checkout's)")
    case.set_defaults(handler=cmd_case)


def cmd_case(args: argparse.Namespace) -> int:
    from lab.catalogue import CASES_DIR
    from lab.catalogue.from_bundle import case_from_bundle

    folder = case_from_bundle(args.bundle, args.case_name, args.cases or CASES_DIR)
    print(f"{folder}: read it, give reference.bug its URL, then `make catalogue CASES={args.case_name}`")
    return 0


def on_lab(command: Callable[[Lab, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command of the lab named by --name, which it closes afterwards."""

    def run(args: argparse.Namespace) -> int:
        from lab.lab import Lab

        lab = Lab(args.name)
        try:
            return command(lab, args)
        finally:
            lab.close()

    return run


# --- up --from / --expect-failure ------------------------------------------------------------------------
def up_request(
    lab: Lab, args: argparse.Namespace, ike_conf_files: dict[str, Path], iked: dict[str, DaemonChoice]
) -> UpRequest:
    """What `up` is asked for on this command line (a bundle's lab, with the command line's own on top),
    and the expected failure's watcher."""
    from lab.blueprint import UpRequest
    from lab.failure import ANY_FAILURE, wait_for_failure

    topology, platform, release = args.topology, args.platform, args.release
    expect: str | None = args.expect_failure
    if args.from_bundle:
        from lab.platforms import get_platform
        from lab.replay import default_platform, differences, failure_pattern, open_bundle

        replay = open_bundle(args.from_bundle, lab.run_dir / "replay")
        topology = args.topology or replay.topology
        platform = default_platform(replay.platforms)
        release = args.release or replay.release
        ike_conf_files = {**replay.ike_conf_files, **ike_conf_files}
        if expect is None:
            expect = failure_pattern(replay, ANY_FAILURE)
        media = {p: get_platform(p).boot_media(release) for p in set(replay.platforms.values())}
        changed = differences(replay, media)
        progress.say(
            f"replaying {args.from_bundle.name}: "
            + ("the same images and ikedlab" if not changed else "differs here: " + "; ".join(changed))
        )
        if expect and args.expect_failure is None and expect != ANY_FAILURE:
            progress.say(
                f"the bundle's lab reproduces an iked failure: expecting {replay.expect_failure!r} "
                "(a bundle's pattern is matched as plain text; --expect-failure REGEX to match a regex)"
            )
        elif expect:
            progress.say(f"the bundle's lab reproduces an iked failure: expecting /{expect}/")
        secrets = replay.manifest.secrets
        if secrets != "as given" and not secrets.startswith("0 "):
            progress.say(
                f"the bundle's iked.conf files had their pre-shared keys redacted ({secrets}): "
                "the replay runs stand-in keys (a bundle made with --show-secrets carries the real ones)"
            )
    if expect == "":
        expect = ANY_FAILURE
    elif expect:
        gate.regex(expect, "--expect-failure")  # the user's own: one line when it does not compile
    tunnel: Callable[[list[Host]], object] | None = None
    if expect:
        pattern = expect

        def tunnel(gateways: list[Host]) -> None:
            seen = wait_for_failure(gateways, pattern, lab=lab.name)
            progress.say(f"expected failure seen on {seen.host}: {seen.line}")

    return UpRequest(
        topology=topology,
        platform=platform,
        release=release,
        ike_conf_files=ike_conf_files,
        iked=iked,
        tunnel=tunnel,
        expect_failure=expect,
        keep_on_failure=args.keep_on_failure or bool(expect),
        force=args.force,
        cold=args.cold,
    )


def failure_was_expected(error: IkedlabError, expect: str | None) -> bool:
    """A failure before the tunnel phase that is the one expected: iked rejecting a file (`iked -n` on the
    host or in the guest), never a console, libvirt or image problem."""
    from lab.errors import IkedConfError, ProvisionError
    from lab.failure import ExpectedFailureMissing

    if not expect or isinstance(error, ExpectedFailureMissing):
        return False
    if not isinstance(error, IkedConfError | ProvisionError):
        return False
    return bool(re.search(expect, " ".join([error.message, *error.details, error.hint or ""])))


# --- the commands -------------------------------------------------------------------------------------
def cmd_bundle(lab: Lab, args: argparse.Namespace) -> int:
    from lab.bundle import make_bundle
    from lab.status import status_text

    lab.attach()
    path = make_bundle(lab, args.output, status_text(lab))  # --show-secrets, either place, is in the env
    print(path)
    return 0


def cmd_capture(lab: Lab, args: argparse.Namespace) -> int:
    from lab.capture import capture_path, link_end, stream_link

    end = link_end(lab.read().topology, args.link, args.at)
    pcap = capture_path(lab.run_dir, args.link)
    if args.write == "-":
        size = stream_link(lab.hypervisor, lab.name, end, pcap, sys.stdout.buffer, args.seconds)
    elif args.write:
        with open(args.write, "wb") as out:
            size = stream_link(lab.hypervisor, lab.name, end, pcap, out, args.seconds)
    else:
        progress.say(f"capturing {args.link} at {end.host} into {pcap} (Ctrl-C stops)")
        size = stream_link(lab.hypervisor, lab.name, end, pcap, None, args.seconds)
    progress.say(f"{args.link}: {size} bytes of pcap, kept in {pcap}")
    return 0


def cmd_impair(lab: Lab, args: argparse.Namespace) -> int:
    from lab import impair

    lab.attach(only=[impair.ROUTER])
    if args.clear:
        cleared = impair.clear(lab, args.link)
        progress.say(f"impairment cleared on {', '.join(cleared)}")
        return 0
    if not args.link:
        raise LabError(f"impair: which link? (e.g. `{ikedlab_for(lab.name)} impair wan1 --delay 100`)")
    settings = impair.Impairment(args.loss, args.delay, args.jitter, args.rate, args.mtu)
    impair.impair(lab, args.link, settings)
    progress.say(f"{args.link}: {settings.netem or 'no netem'}{f', mtu {args.mtu}' if args.mtu else ''}")
    return 0


def cmd_reconfigure(lab: Lab, args: argparse.Namespace) -> int:
    from lab.reconfigure import reconfigure

    try:
        text = gate.read_text(args.iked_conf, gate.IKED_CONF_BYTES)
    except gate.GateError as e:
        raise LabError(f"--iked-conf {args.iked_conf}: {e.message}") from None
    reconfigure(lab, args.host, text)
    progress.say(f"{args.host} runs {args.iked_conf}; the tunnel is up again")
    return 0


def cmd_traffic(lab: Lab, args: argparse.Namespace) -> int:
    from lab.traffic import send

    hosts = lab.attach()
    if args.source not in hosts:
        raise LabError(f"no host '{args.source}' in lab '{lab.name}' (hosts: {', '.join(hosts)})")
    destination = args.destination
    if destination in hosts:
        destination = str(hosts[destination].spec.interfaces[0].address.ip)
    result = send(hosts[args.source], destination, nbytes=args.nbytes, seconds=args.seconds, size=args.size)
    print(result.summary())
    return 0 if result.lost == 0 else 1


def cmd_rekey(lab: Lab, args: argparse.Namespace) -> int:
    from lab.traffic import rekey, stop_rekeying

    lab.attach()
    if args.stop:
        stop_rekeying(lab)
        progress.say("iked's normal lifetimes are back; the tunnel is up")
        return 0
    for name, (old, new) in rekey(lab, args.child_seconds, args.ike_seconds, args.child_bytes).items():
        progress.say(
            f"{name}: child SAs {_spis(old.child)} -> {_spis(new.child)}; "
            f"IKE SA {_spis(old.ike)} -> {_spis(new.ike)}"
        )
    return 0


def _spis(values: frozenset) -> str:
    return ",".join(f"{v:#010x}" if isinstance(v, int) else str(v)[:10] for v in sorted(values)) or "-"
