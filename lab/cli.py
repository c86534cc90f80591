"""The `ikedlab` command, thin: typed errors from the layers become one line and an exit code here."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab import cli_bisect, cli_report, cli_repro, cli_store, gate, private, progress, redact, settings
from lab.errors import IkedlabError
from lab.exercises import cli as cli_exercise
from lab.libvirt_hosts import check_uri

EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ikedlab", description="A virtual lab for IPsec with iked.")
    p.add_argument("--debug", action="store_true", help="log every step and show tracebacks")
    p.add_argument(
        "--show-secrets",
        action="store_true",
        help="keep SA keys and PSKs in clear in transcripts, evidence and bundles (never publish them then); "
        "private keys are never kept (also IKEDLAB_SHOW_SECRETS=1)",
    )
    p.add_argument(
        "--name", default=settings.lab_name(), help="the lab's name (default: $IKEDLAB_NAME or default)"
    )
    p.add_argument(
        "--connect",
        metavar="URI",
        help="the libvirt host the lab runs on, e.g. qemu+ssh://root@host/system (default: "
        "$IKEDLAB_LIBVIRT_URI or qemu:///system; docs/nightly.md)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="boot the lab and bring the tunnel up")
    up.add_argument(
        "--platform",
        default=settings.platform(),
        help="guest platform for hosts that do not name one "
        f"(default: $IKEDLAB_PLATFORM or {settings.PLATFORM})",
    )
    up.add_argument("--topology", type=Path, help="a topology file (default: the guide's lab)")
    up.add_argument(
        "--iked-conf",
        action="append",
        default=[],
        metavar="HOST=FILE",
        help="use your own iked.conf on a gateway (repeatable)",
    )
    up.add_argument(
        "--iked-version",
        action="append",
        default=[],
        metavar="HOST=VERSION",
        help="run another packaged iked on a gateway, e.g. init=7.4 (repeatable; like the topology's iked:)",
    )
    up.add_argument(
        "--iked-source",
        metavar="[HOST=]PATH",
        help="build OpenIKED portable from a source tree and run it on the Linux gateways (or only on HOST)",
    )
    up.add_argument("--keep-on-failure", action="store_true", help="leave the lab running if `up` fails")
    up.add_argument(
        "--release",
        help="release to boot, for platforms with cached golden images (default: the newest; OpenBSD: "
        "snapshots boots the newest -current image)",
    )
    up.add_argument("--force", action="store_true", help="go ahead even if another live process owns the lab")
    up.add_argument(
        "--cold", action="store_true", help="boot and provision even when a warm snapshot matches"
    )
    cli_repro.add_up_options(up)
    up.set_defaults(handler=cmd_up)

    down = sub.add_parser("down", help="remove the lab's guests (always safe, also after a failed up)")
    down.add_argument("--force", action="store_true", help="also when another live process owns the lab")
    down.add_argument("--snapshots", action="store_true", help="also delete the lab's warm snapshot")
    down.set_defaults(handler=cmd_down)
    sub.add_parser(
        "reset", help="put the running lab back to its provisioned state, from its snapshot"
    ).set_defaults(handler=cmd_reset)
    sub.add_parser("status", help="a table of hosts, addresses and tunnel state").set_defaults(
        handler=cmd_status
    )

    console = sub.add_parser("console", help="an interactive serial console on a host (leave with Ctrl-])")
    console.add_argument("host")
    console.set_defaults(handler=cmd_console)

    ex = sub.add_parser("exec", help="run a command on a host; its exit status is passed through")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    ex.set_defaults(handler=cmd_exec)

    iked = sub.add_parser(
        "iked", help="start, stop or restart iked on a gateway, or watch it negotiate (debug: iked -dv)"
    )
    iked.add_argument("host")
    iked.add_argument("action", choices=("start", "stop", "restart", "debug"))
    iked.set_defaults(handler=cmd_iked)

    graph = sub.add_parser(
        "graph",
        help="the lab as a picture: hosts, links, addresses, the tunnel and its state (text; SVG/PNG)",
    )
    graph.add_argument("-o", "--output", type=Path, help="also draw it into FILE.svg, FILE.png or FILE.dot")
    graph.add_argument(
        "--topology", type=Path, help="draw this topology file instead of the running lab (or the guide's)"
    )
    graph.add_argument(
        "--platform", default=settings.platform(), help="when no lab is up: the hosts' platform"
    )
    graph.set_defaults(handler=cmd_graph)

    render = sub.add_parser("render", help="write the files ikedlab provisions, per host, into a folder")
    render.add_argument("--topology", type=Path)
    render.add_argument("--platform", default=settings.platform())
    render.add_argument(
        "--iked-conf", action="append", default=[], metavar="HOST=FILE", help="a gateway's own iked.conf"
    )
    render.add_argument("--out", type=Path, required=True)
    render.set_defaults(handler=cmd_render)

    cli_repro.add_commands(sub)
    cli_store.add_commands(sub)
    cli_bisect.add_commands(sub)
    cli_report.add_commands(sub)
    cli_exercise.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    private.restrict_umask()  # everything ikedlab writes is its user's alone
    if args.show_secrets:
        os.environ["IKEDLAB_SHOW_SECRETS"] = "1"  # for this process and the ikedlab processes it starts
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(name)s: %(message)s"
    )
    try:
        check_names(args)
        if args.connect:  # every Hypervisor of this process (and of its children) connects there
            os.environ["IKEDLAB_LIBVIRT_URI"] = check_uri(args.connect, "--connect")
        return _dispatch(args)
    except IkedlabError as e:
        if args.debug:
            raise
        print(redact.scrub("\n".join(e.lines())), file=sys.stderr)  # errors quote guests' output
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ikedlab: interrupted", file=sys.stderr)
        return 130


#: Arguments that are names of the lab's parts, judged by the gate before any command looks them up (a host
#: name becomes a lock file's name, a link name a pcap's).
NAMES = {"host": gate.HOST, "link": gate.LINK, "at": gate.HOST, "source": gate.HOST, "name": gate.LAB}


def check_names(args: argparse.Namespace) -> None:
    for attribute, rule in NAMES.items():
        value = getattr(args, attribute, None)
        if value is not None:
            rule.check(value, "--name" if attribute == "name" else attribute.upper())


def _dispatch(args: argparse.Namespace) -> int:
    return int(args.handler(args) or 0)


def _lab(args: argparse.Namespace):  # noqa: ANN202 - lazy import keeps `ikedlab --help` fast
    from lab.lab import Lab

    return Lab(args.name)


def cmd_up(args: argparse.Namespace) -> int:
    from lab.ikedconf import parse_options

    ike_conf_files = parse_options(args.iked_conf)
    iked = iked_choices(args.iked_version, args.iked_source, args.topology)
    lab = _lab(args)
    request = cli_repro.up_request(lab, args, ike_conf_files, iked)  # `--from BUNDLE`, `--expect-failure`
    expect = request.expect_failure
    try:
        try:
            result = lab.up(request)
        except IkedlabError as e:
            if cli_repro.failure_was_expected(e, expect):
                progress.say(f"expected failure: {e.message}")
                return 0
            if expect and not args.keep_on_failure:
                lab.down(quiet=True)
            raise
        if result.restored:
            progress.say(
                f"restored warm snapshot of lab '{lab.name}' in {result.restored_in:.1f} s (tunnel verified)"
            )
        elif result.based_in is not None:
            progress.say(
                f"lab '{lab.name}' is up from its booted base in {result.based_in:.1f} s (restored, then"
                f" iked's part provisioned; {result.seconds:.1f} s in all)"
            )
        else:
            progress.say(
                f"lab '{lab.name}' is up in {result.seconds:.1f}s; transcripts in {lab.run_dir / 'console'}"
            )
        _print_status(lab, just_verified=True)
    finally:
        lab.close()
    return 0


def iked_choices(versions: list[str], source: str | None, topology: Path | None) -> dict:
    """--iked-version HOST=VERSION and --iked-source [HOST=]PATH -> host -> DaemonChoice."""
    from lab.placement import load_topology
    from lab.platforms import DaemonChoice

    choices: dict[str, DaemonChoice] = {}
    for item in versions:
        host, _, version = item.partition("=")
        if not host or not version:
            raise IkedlabError(f"--iked-version {item}: expected HOST=VERSION, e.g. init=7.4")
        gate.HOST.check(host, "--iked-version")
        choices[host] = DaemonChoice(version=version)
    if source:
        host, sep, path = source.partition("=")
        if not sep:
            host, path = "", source
        elif host:
            gate.HOST.check(host, "--iked-source")
        tree = Path(path).expanduser()
        if not tree.is_dir():
            raise IkedlabError(f"--iked-source {source}: {tree} is not a directory")
        gateways = [host] if host else [g.name for g in load_topology(topology).gateways]
        for name in gateways:
            choices[name] = DaemonChoice(choices.get(name, DaemonChoice()).version, tree)
    return choices


def cmd_down(args: argparse.Namespace) -> int:
    lab = _lab(args)
    try:
        lab.down(force=args.force, snapshots=args.snapshots)
    finally:
        lab.close()
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    lab = _lab(args)
    try:
        started = time.monotonic()
        lab.reset()
        progress.say(f"lab '{lab.name}' reset from its warm snapshot in {time.monotonic() - started:.1f} s")
    finally:
        lab.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The table, whatever shape the lab is in; exit status 0 only when every host is healthy."""
    lab = _lab(args)
    try:
        healthy = _print_status(lab)
    finally:
        lab.close()
    return 0 if healthy else EXIT_ERROR


def _print_status(lab, just_verified: bool = False) -> bool:  # noqa: ANN001
    """Print the status table; True when the lab is healthy."""
    from lab.status import print_status

    return print_status(lab, just_verified)


def cmd_console(args: argparse.Namespace) -> int:
    lab = _lab(args)
    lab.read()  # a clear error when the lab is not up
    domains = {d.host: d for d in lab.domains()}
    if args.host not in domains:
        raise IkedlabError(
            f"no host '{args.host}' in lab '{lab.name}' (hosts: {', '.join(domains) or 'none'})"
        )
    argv = lab.hypervisor.console_argv(domains[args.host].name, learner=True)
    print(_banner(lab, args.host), end="", file=sys.stderr)
    lab.close()
    print(f"Connected to {args.host}'s serial console; leave with Ctrl-]", file=sys.stderr)
    return _console_session(argv)


#: virsh on a terminal starts polkit's text agent, which prints this where there is no polkit; the lab needs
#: none (it talks to libvirt as the user that runs it), so the line is noise.
_POLKIT_NOISE = b"Authorization not available. Check if polkit service is running"


def _console_session(argv: list[str]) -> int:
    """Run the console program on this terminal; its stderr passes through, less polkit's noise."""
    child = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert child.stderr

    def relay() -> None:
        assert child.stderr
        for line in child.stderr:
            if _POLKIT_NOISE not in line:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    status = child.wait()
    relaying.join(timeout=1)
    return status


def _banner(lab, host: str) -> str:  # noqa: ANN001
    """The host's login banner (/etc/motd in the guest), shown as the learner connects."""
    from lab.banner import motd

    blueprint = lab.read()
    return motd(blueprint.topology, blueprint.topology.host(host), blueprint.platforms[host])


def cmd_exec(args: argparse.Namespace) -> int:
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise IkedlabError("exec: no command given", "ikedlab exec HOST -- COMMAND")
    import shlex

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    line = " ".join(shlex.quote(c) if len(command) > 1 else c for c in command)
    # Output as it comes; Ctrl-C interrupts the command in the guest too (Console.run).
    console = _held_console(args.name, args.host)
    if console is not None:  # the lab's keeper handed over the host's pty: no libvirt, no topology
        try:
            console.attach()
            return console.run(line, timeout=settings.EXEC, on_output=show).status
        finally:
            console.close()
    lab = _lab(args)
    try:
        host = lab.attach(only=[args.host])[args.host]
        result = host.console.run(line, timeout=settings.EXEC, on_output=show)
    finally:
        lab.close()
    return result.status


def _held_console(lab: str, host: str):  # noqa: ANN202 - lazy imports: this path is exec's whole speed
    """`host`'s control console on the pty the lab's keeper holds (lab/keeper.py), its channel lock taken;
    None when no keeper serves it (the caller attaches through libvirt, which also names what is wrong)."""
    from lab import gate, keeper

    if gate.LAB.problem(lab):
        return None
    run_dir = private.labs_dir() / lab
    from lab.channel_lock import ChannelLock
    from lab.console import Console, Transcript

    lock = ChannelLock(run_dir / "locks" / f"{host}.console", host)
    lock.acquire(on_wait=progress.say)  # before the pty is ours, as every console does
    held = keeper.borrow(run_dir, host)
    if held is None:
        lock.release()
        return None
    return Console(
        host,
        None,
        pty=held.fd,
        transcript=Transcript(run_dir / "console"),
        raw_log=run_dir / "console" / f"{host}.raw",
        user=held.login.user,
        password=held.login.password,
        password_prompt=held.login.password_prompt,
        lock=lock,
    )


def cmd_iked(args: argparse.Namespace) -> int:
    from lab.service import control

    lab = _lab(args)
    try:
        host = lab.attach(only=[args.host])[args.host]
        return control(host, args.action)
    finally:
        lab.close()


def cmd_graph(args: argparse.Namespace) -> int:
    """The running lab as `up` built it, with its tunnels' state; with --topology (or when no lab is up)
    that file (the guide's) as it would be, its tunnels not running."""
    from lab import graph
    from lab.errors import LabError
    from lab.placement import load_topology, resolve_platforms

    lab = _lab(args)
    blueprint = None
    if args.topology is None:
        try:
            blueprint = lab.read()
        except LabError:
            pass  # no lab: the guide's
    states = None
    if blueprint:
        topology, platforms = blueprint.topology, blueprint.platforms
        try:
            gateways = lab.attach(only=[g.name for g in topology.gateways])
            states = {n: "ESTABLISHED" if h.sas().established else "down" for n, h in gateways.items()}
        finally:
            lab.close()
    else:
        topology = load_topology(args.topology)
        platforms = resolve_platforms(topology, args.platform)
    names = {h: p.name for h, p in platforms.items()}
    prefixes = {h: p.facts.interface_prefix for h, p in platforms.items()}
    view = graph.LabView(topology, lab.name, names, prefixes, states)
    print(graph.text(view), end="")
    if args.output:
        graph.write(graph.dot_source(view), args.output)
        print(f"drawn: {args.output}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from lab.ikedconf import parse_options
    from lab.plan import render_lab

    written = render_lab(args.topology, args.platform, args.out, ike_conf_files=parse_options(args.iked_conf))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
