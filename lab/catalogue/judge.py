"""Steps run on a lab's hosts: actions done, checks judged.

Each step type of lab.catalogue.steps has one function here, found through STEP_RUNNERS. A check reads the
host with one command (the platform's, so the same step holds on OpenBSD and on Linux), judges the typed
reading, and when it does not hold raises CheckFailed: the step's place in case.yaml, the host, the command
that was read, what was expected and what was found, in one line. Checks that wait (a tunnel, a log line)
wait for their condition with a deadline, never for a fixed time.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.catalogue import steps as s
from lab.catalogue.context import CaseContext
from lab.errors import IkedlabError, ParseError, ProvisionError
from lab.host import Host
from lab.parallel import in_parallel
from lab.platforms.parsers import iked_fatal_line
from lab.provision import start_ike, stop_ike
from lab.readings import IpsecCounters, KernelSa, KernelState, Packet, PingResult, SaState
from lab.settings import COMMAND, PING_SLACK
from lab.traffic import Keys, send, wait_for_rekey

HOLD_INTERVAL = 0.5  # seconds between readings of a count that must keep holding


class CheckFailed(IkedlabError):
    """A step of a case did not hold (or an action failed): where in case.yaml, on which host, what was
    read with which command, what was expected and what was found."""

    def __init__(self, where: str, host: str, command: str, expected: str, found: str) -> None:
        self.where, self.host, self.command, self.expected, self.found = where, host, command, expected, found
        super().__init__(f"{where}: {host}: `{command}`: expected {expected}; found {found}")


@dataclass
class Stage:
    """What a case's steps act on: the lab's hosts, the case's context, and what was read at its start."""

    hosts: dict[str, Host]
    context: CaseContext
    gateways: list[str]
    counters: dict[str, IpsecCounters] = field(
        default_factory=dict
    )  # per gateway, before the daemons started
    keys: dict[str, Keys] = field(default_factory=dict)  # per gateway, when its tunnel was last established
    log: list[str] = field(default_factory=list)  # what each step did, for the evidence folder

    def targets(self, on: tuple[str, ...]) -> list[Host]:
        names: list[str] = []
        for name in on:
            for one in self.gateways if name == "gateways" else [name]:
                if one not in names:
                    names.append(one)
        return [self.hosts[n] for n in names]

    def address(self, expression: str) -> str:
        return self.context.resolve(expression).split("/")[0]


def run_step(stage: Stage, where: str, step: s.Step) -> None:
    started = time.monotonic()
    STEP_RUNNERS[type(step)](stage, where, step)
    stage.log.append(f"{where} {step.TYPE}: held ({time.monotonic() - started:.1f}s)")


# --- readings -----------------------------------------------------------------------------------------------


def read_kernel(host: Host) -> tuple[str, KernelState]:
    command = host.platform.kernel_state_command()
    return command, host.platform.parse_kernel_state(host.check(command).output)


def read_sas(host: Host) -> tuple[str, SaState]:
    command = host.platform.sa_command()
    result = host.run(command)
    return command, host.platform.parse_sa(result.output) if result.ok else SaState()


def _inside(actual: str, expected: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        network = ipaddress.ip_network(actual, strict=False)
    except ValueError:
        return False
    return network.version == expected.version and network.subnet_of(expected)  # type: ignore[arg-type]


def _listed(items: list[str]) -> str:
    return "; ".join(items) if items else "none"


# --- tunnel -------------------------------------------------------------------------------------------------


def run_tunnel(stage: Stage, where: str, step: s.Tunnel) -> None:
    hosts = stage.targets(step.on)
    if step.state == "established":
        failed = threading.Event()
        deadline = time.monotonic() + step.within

        def wait(h: Host) -> None:
            try:
                h.wait_established(max(1.0, deadline - time.monotonic()), stop=failed)
            except ProvisionError as e:
                failed.set()
                raise CheckFailed(
                    where,
                    h.name,
                    h.platform.sa_command(),
                    f"an ESTABLISHED IKE SA with child SAs both ways within {step.within:g}s",
                    e.message.removeprefix(f"{h.name}: "),
                ) from None

        in_parallel(hosts, wait)
        for h in hosts:
            stage.keys[h.name] = Keys.of(read_sas(h)[1])
        return
    for h in hosts:
        command, state = read_sas(h)
        if any(i.state == "ESTABLISHED" for i in state.ike_sas) or state.child_sas:
            raise CheckFailed(
                where, h.name, command, "no established IKE SA and no child SA", state.describe()
            )
        kernel_command, kernel = read_kernel(h)
        keyed = [sa.describe() for sa in kernel.sas if not sa.larval and sa.protocol in ("esp", "ah")]
        if keyed:
            raise CheckFailed(where, h.name, kernel_command, "no keyed SA in the kernel", _listed(keyed))


# --- IKE SAs ------------------------------------------------------------------------------------------------


def run_ike_sa(stage: Stage, where: str, step: s.IkeSaCheck) -> None:
    flags = set(step.flags)
    peer = stage.address(step.peer) if step.peer else ""
    wanted = [] if step.state == "any" else [f"state {step.state}"]
    wanted += [f"peer id {step.peer_id}"] if step.peer_id else []
    wanted += [f"peer {peer}"] if peer else []
    wanted += ["NAT-T"] if flags & {"natt", "udpencap"} else []
    wanted += [f"initiator {step.initiator}"] if step.initiator != "any" else []
    held = f" for {step.hold:g}s" if step.hold else ""

    def judge(h: Host) -> None:
        command, state = read_sas(h)
        matching = [
            i
            for i in state.ike_sas
            if step.state in ("any", i.state)
            and (not step.peer_id or i.peer_id == step.peer_id)
            and (not peer or i.peer.rsplit(":", 1)[0].strip("[]") == peer)
            and (not flags & {"natt", "udpencap"} or i.natt)
            and (step.initiator == "any" or i.initiator == (step.initiator == "yes"))
        ]
        if not s.compare(step.count, len(matching)):
            found = [f"{i.state} {i.peer} <{i.peer_id}>{' natt' if i.natt else ''}" for i in state.ike_sas]
            what = f"{step.count} IKE SA(s){' with ' if wanted else ''}{', '.join(wanted)}{held}"
            raise CheckFailed(where, h.name, command, what, _listed(found))

    def watch(h: Host) -> None:
        deadline = time.monotonic() + step.hold
        judge(h)
        while time.monotonic() < deadline:
            time.sleep(HOLD_INTERVAL)  # the pace of reading, over a period the case asked to watch
            judge(h)

    in_parallel(stage.targets(step.on), watch)


# --- kernel: child SAs and flows ----------------------------------------------------------------------------


def run_child_sa(stage: Stage, where: str, step: s.ChildSaCheck) -> None:
    ends = [h.name for h in stage.targets(step.between)]
    if len(ends) != 2:
        raise CheckFailed(where, "-", "-", "two hosts in `between`", ", ".join(ends) or "none")
    field_name = "address6" if step.ipv6 else "address"
    a, b = (stage.address(f"{e}.{field_name}" if step.ipv6 else e) for e in ends)
    wanted = [step.protocol] + ([step.mode] if step.mode != "any" else [])
    wanted += [f"{k} {v}" for k, v in (("enc", step.enc), ("auth", step.auth), ("comp", step.comp)) if v]
    wanted += {"yes": ["in UDP"], "no": ["not in UDP"], "any": []}[step.udpencap]

    def fits(sa: KernelSa) -> bool:
        return (
            not sa.larval
            and sa.protocol == step.protocol
            and (step.mode == "any" or sa.mode == step.mode)
            and (not step.enc or sa.enc == step.enc)
            and (not step.auth or sa.auth == step.auth)
            and (not step.comp or sa.comp == step.comp)
            and (step.udpencap == "any" or bool(sa.encap) == (step.udpencap == "yes"))
        )

    def one(h: Host) -> None:
        command, kernel = read_kernel(h)
        between = [sa for sa in kernel.sas if {sa.src, sa.dst} == {a, b}]
        forth = [sa for sa in between if fits(sa) and sa.src == a]
        back = [sa for sa in between if fits(sa) and sa.src == b]
        found = _listed([sa.describe() for sa in between])
        if step.count:
            if not s.compare(step.count, len(forth) + len(back)):
                raise CheckFailed(
                    where,
                    h.name,
                    command,
                    f"{step.count} SA(s) {' '.join(wanted)} between {a} and {b}",
                    found,
                )
        elif not forth or not back:
            missing = f"{a} -> {b}" if not forth else f"{b} -> {a}"
            raise CheckFailed(where, h.name, command, f"an SA {' '.join(wanted)} {missing}", found)

    in_parallel(stage.targets(step.on), one)


def run_flow(stage: Stage, where: str, step: s.FlowCheck) -> None:
    src, dst = stage.context.network(step.src), stage.context.network(step.dst)
    peer = stage.address(step.peer) if step.peer else ""
    wanted = {
        "both": [("out", src, dst), ("in", dst, src)],
        "out": [("out", src, dst)],
        "in": [("in", src, dst)],
    }

    def one(h: Host) -> None:
        command, kernel = read_kernel(h)
        for direction, a, b in wanted[step.direction]:
            matching = [
                p
                for p in kernel.policies
                if p.direction == direction
                and _inside(p.src, a)
                and _inside(p.dst, b)
                and (step.protocol == "any" or step.protocol in p.protocol.split("+"))
                and (not peer or p.peer == peer)
            ]
            proto = "" if step.protocol == "any" else f"{step.protocol} "
            what = (
                f"{'no' if step.absent else 'a'} flow {proto}{direction} from {a} to {b}"
                f"{' peer ' + peer if peer else ''}"
            )
            if bool(matching) == step.absent:
                shown = matching if step.absent else list(kernel.policies)
                raise CheckFailed(where, h.name, command, what, _listed([p.describe() for p in shown]))

    in_parallel(stage.targets(step.on), one)


# --- traffic ------------------------------------------------------------------------------------------------


def _icmp_with(packets: tuple[Packet, ...], address: str) -> tuple[list[Packet], list[Packet]]:
    icmp = [p for p in packets if p.protocol == "ICMP"]
    return [p for p in icmp if p.dst == address], [p for p in icmp if p.src == address]


def run_ping(stage: Stage, where: str, step: s.Ping) -> None:
    source = stage.hosts[step.src]
    target = stage.address(f"{step.dst}.address6" if step.ipv6 and "." not in step.dst else step.dst)
    command = source.platform.ping_command(target, step.count, 2, size=step.size or None)
    timeout = step.count * 2 + PING_SLACK

    def ping() -> PingResult:
        output = source.run(command, timeout=timeout).output
        try:
            return source.platform.parse_ping(output)
        except ParseError:
            # Linux refuses to send what an output filter drops (the regress's ping filter): "ping: sendto:
            # Operation not permitted", and no summary. Nothing left, nothing came back.
            if "Operation not permitted" in output:
                return PingResult(step.count, 0)
            last = output.strip().splitlines()[-1] if output.strip() else "no output"
            raise CheckFailed(where, source.name, command, "ping's summary", last) from None

    if step.tunnel == "unchecked":
        result = ping()
        capture = None
    else:
        at = stage.hosts[step.capture_at or step.src]
        with at.capture_decapsulated() as box:
            result = ping()
        capture = box[0]
    expected = {"all": step.count, "none": 0}.get(step.replies)
    ok = {
        "all": result.received == step.count,
        "none": result.received == 0,
        "some": result.received > 0,
        "any": True,
    }[step.replies]
    if not ok:
        want = f"{expected} of {step.count} replies" if expected is not None else "some replies"
        raise CheckFailed(where, source.name, command, want, f"{result.received} of {result.transmitted}")
    if capture is None:
        return
    at_name = step.capture_at or step.src
    to, back = _icmp_with(capture.packets, target)
    seen = f"{len(to)} ICMP packet(s) to {target} and {len(back)} back"
    if step.tunnel == "both" and (not to or not back):
        raise CheckFailed(
            where, at_name, "a decapsulated capture (enc0)", "the pings through IPsec both ways", seen
        )
    if step.tunnel == "none" and (to or back):
        raise CheckFailed(where, at_name, "a decapsulated capture (enc0)", "no ping through IPsec", seen)


def run_capture(stage: Stage, where: str, step: s.Capture) -> None:
    at = stage.hosts[step.at]
    try:
        iface = at.interface(step.link)
    except StopIteration:
        raise CheckFailed(where, at.name, "-", f"an interface on {step.link}", "none") from None
    source = stage.hosts[step.ping_from]
    target = stage.address(step.ping_to)
    with at.capture_wire(iface) as box:
        source.ping(target, count=step.count)
    capture = box[0]
    command = f"tcpdump -n -i {iface}"
    # Only the pinged address's family: a link's IPv6 neighbour discovery (a router solicitation, seen on
    # iked 7.4's image) is no plaintext of the pings.
    six = ":" in target
    packets = [p for p in capture.packets if (":" in p.src) == six]
    protocols = {p.protocol for p in packets}
    summary = ", ".join(sorted(p for p in protocols if p)) or "nothing"
    missing = [p for p in step.has if p.upper() not in protocols]
    if missing:
        raise CheckFailed(where, at.name, command, f"{', '.join(missing)} on {step.link}", summary)
    present = [p for p in step.lacks if p.upper() in protocols]
    if present:
        raise CheckFailed(where, at.name, command, f"no {', '.join(present)} on {step.link}", summary)
    if step.udp_port:
        esp = [p for p in packets if p.protocol == "ESP"]
        off = [p.raw for p in esp if step.udp_port not in (p.src_port, p.dst_port)]
        if not esp or off:
            raise CheckFailed(
                where, at.name, command, f"ESP in UDP port {step.udp_port}", _listed(off) if esp else "no ESP"
            )


def run_traffic(stage: Stage, where: str, step: s.Traffic) -> None:
    source = stage.hosts[step.src]
    result = send(source, stage.address(step.dst), seconds=step.seconds, size=step.size)
    lost = 100.0 * result.lost / max(1, result.transmitted)
    if lost > step.loss:
        raise CheckFailed(
            where, source.name, "ping (traffic)", f"at most {step.loss:g}% lost", result.summary()
        )
    stage.log.append(f"{where} traffic: {result.summary()}")


# --- logs, counters, commands -------------------------------------------------------------------------------


def run_log(stage: Stage, where: str, step: s.Log) -> None:
    def one(h: Host) -> None:
        command = h.platform.ike_log_since_command(h.ike_log_mark)
        if step.matches:
            if not _log_shows(h, re.compile(step.matches), step.within):
                tail = h.iked_log(h.ike_log_mark).strip().splitlines()[-3:]
                raise CheckFailed(
                    where,
                    h.name,
                    command,
                    f"a line matching /{step.matches}/ within {step.within:g}s",
                    " | ".join(tail) or "an empty log",
                )
        else:
            line = iked_fatal_line(h.iked_log(h.ike_log_mark), re.compile(step.absent))
            if line:
                raise CheckFailed(where, h.name, command, f"no line matching /{step.absent}/", line)

    in_parallel(stage.targets(step.on), one)


def _log_shows(host: Host, regex: re.Pattern[str], within: float) -> bool:
    """Whether the daemon's log (since its start) shows a line matching `regex` within `within` seconds."""
    try:
        host.wait_until(
            f"a log line matching /{regex.pattern}/",
            lambda: host.iked_log(host.ike_log_mark),
            lambda text: bool(regex.search(text)),
            within,
        )
    except ProvisionError:
        return False
    return True


def run_counters(stage: Stage, where: str, step: s.Counters) -> None:
    def one(h: Host) -> None:
        now = h.ipsec_counters()
        before = stage.counters.get(h.name, IpsecCounters(0, 0, 0, 0))
        for name in ("esp_in", "esp_out", "ah_in", "ah_out"):
            comparison = getattr(step, name)
            if not comparison:
                continue
            delta = getattr(now, name) - getattr(before, name)
            if not s.compare(comparison, delta):
                raise CheckFailed(
                    where,
                    h.name,
                    h.platform.counters_command(h.spec),
                    f"{name} {comparison} since the case started",
                    f"{name} {delta}",
                )

    in_parallel(stage.targets(step.on), one)


def run_command(stage: Stage, where: str, step: s.Run) -> None:
    def one(h: Host) -> None:
        result = h.run(step.command, timeout=COMMAND)
        last = " | ".join(result.output.strip().splitlines()[-3:]) or "no output"
        if step.status == "ok" and not result.ok:
            raise CheckFailed(where, h.name, step.command, "exit status 0", f"exit {result.status}: {last}")
        if step.status == "fail" and result.ok:
            raise CheckFailed(where, h.name, step.command, "a non-zero exit status", f"exit 0: {last}")
        if step.output and not re.search(step.output, result.output):
            raise CheckFailed(where, h.name, step.command, f"output matching /{step.output}/", last)

    in_parallel(stage.targets(step.on), one)


def run_rekeyed(stage: Stage, where: str, step: s.Rekeyed) -> None:
    def one(h: Host) -> None:
        before = stage.keys.get(h.name)
        if before is None:
            raise CheckFailed(where, h.name, "-", "a `tunnel: established` step before this one", "none")
        try:
            stage.keys[h.name] = wait_for_rekey(h, before, ike=step.ike, timeout=step.within)
        except ProvisionError as e:
            what = "new keys for the IKE SA and the child SAs" if step.ike else "new keys for the child SAs"
            raise CheckFailed(
                where, h.name, h.platform.sa_command(), f"{what} within {step.within:g}s", e.message
            ) from None

    in_parallel(stage.targets(step.on), one)


def run_mark(stage: Stage, where: str, step: s.Mark) -> None:
    in_parallel(stage.targets(step.on), lambda h: h.mark_ike_log())


def run_restart(stage: Stage, where: str, step: s.Restart) -> None:
    hosts = stage.targets(step.on)
    stop_ike(hosts)
    start_ike(hosts)


STEP_RUNNERS: dict[type[s.Step], Callable[[Stage, str, Any], None]] = {
    s.Tunnel: run_tunnel,
    s.IkeSaCheck: run_ike_sa,
    s.ChildSaCheck: run_child_sa,
    s.FlowCheck: run_flow,
    s.Ping: run_ping,
    s.Log: run_log,
    s.Mark: run_mark,
    s.Rekeyed: run_rekeyed,
    s.Counters: run_counters,
    s.Capture: run_capture,
    s.Run: run_command,
    s.Restart: run_restart,
    s.Traffic: run_traffic,
}
assert set(STEP_RUNNERS) == set(s.STEP_TYPES.values()), "every step type has its runner"


def save_log(stage: Stage, folder: Path) -> None:
    (folder / "steps.txt").write_text("\n".join(stage.log) + "\n")
