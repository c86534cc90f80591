"""One case on a lab, start to finish: a case costs a restore, a configuration and a tunnel, never a boot.

The lab comes up once (restored from its warm snapshot) and every case runs inside `lab.reconfigured()`,
which restores that snapshot afterwards, whatever the case did. In between, the case's own world is set up
the way openiked's live regress sets up its machines (SETUP_START: `ipsecctl -F; pkill iked; iked -f …`):
1. the guide's daemons stop on every gateway and the kernels are emptied: each kernel's baseline;
2. the case's changes: IPv6 on every link, the regress's ping filter, NAT on the router;
3. keys and certificates (`pki: upstream`, lab.catalogue.pki), then each gateway's configuration rendered
   from the case's template and judged by the daemon's own check (`iked -n`);
4. the daemons start, passive side first (as `up` starts them), unless the case says they stay stopped;
5. the steps, in order (lab.catalogue.judge);
6. the daemons' health, then the daemons stop and the kernels must be back to their baseline
   (lab.catalogue.leftovers);
7. evidence for the case's folder — its rendered configurations, logs, transcripts, the steps' log — taken
   before the snapshot is restored, with the case's secrets blanked.
"""

from __future__ import annotations

import secrets as random
import time
from dataclasses import dataclass
from pathlib import Path

from lab.catalogue.case import Case, CaseError, render
from lab.catalogue.context import CaseContext, ipv6_plan, lab_context
from lab.catalogue.judge import Stage, run_step, save_log
from lab.catalogue.leftovers import check_health, empty_kernels, stop_and_check_leftovers
from lab.catalogue.pki import Pki
from lab.errors import IkedlabError, ProvisionError
from lab.host import Host
from lab.lab import Lab
from lab.parallel import in_parallel
from lab.provision import start_ike, stop_ike, write_ike_conf
from lab.redact import scrub

SECRET_BYTES = 20  # the regress's PSKs: `openssl rand -hex 20`


@dataclass(frozen=True)
class Outcome:
    seconds: float  # from the first command to the lab restored
    steps: tuple[str, ...]  # what each step did
    phases: tuple[tuple[str, float], ...]  # (phase, seconds): where the case's time went


class _Clock:
    """Each phase of a case, timed: what `make bench` and the evidence folder say a case costs."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, round(now - self._last, 2)))
        self._last = now


def why_not(case: Case, lab: Lab) -> str | None:
    """Why `case` cannot run on this lab (one of its gateways' platforms), or None: a skip's reason."""
    for gateway in lab.gateways():
        platform = gateway.platform
        for capability in case.requires:
            if not platform.can(capability):
                return platform.why_not(capability)
        if case.setup.daemons == "stopped":
            continue
        kind = platform.ike_conf_format
        if case.template_for(gateway.name, kind) is None:
            role = dict(case.roles).get(gateway.name)
            if role:
                return (
                    f"{case.name}: {gateway.name} must be {role} ({gateway.name} runs {platform.name} here)"
                )
            return (
                f"{case.name} has no configuration for {gateway.name} on {platform.name}: it needs "
                f"{gateway.name}.{kind}.j2 or {kind}.j2 (its roles must be iked)"
            )
        if case.setup.iked_flags and platform.ike_conf_format != "iked.conf":
            return f"{case.name}: it gives iked flags, and {gateway.name} runs {platform.name}"
    return None


def run_case(lab: Lab, case: Case, pki: Pki | None = None, evidence: Path | None = None) -> Outcome:
    """Run `case` on `lab` (up, with its warm snapshot) and put the lab back. CheckFailed when a step does
    not hold, LeftoverFound when the case left something, CaseError when the case itself is wrong."""
    assert lab.topology, "the lab is neither up nor attached"
    started = time.monotonic()
    secrets = {name: random.token_hex(SECRET_BYTES) for name in case.secrets}
    platforms = {name: p.name for name, p in lab.platforms.items()}
    context = lab_context(lab.topology, platforms, secrets, case.name, ipv6=case.setup.ipv6)
    gateways = lab.gateways()
    stage = Stage(lab.hosts, context, [g.name for g in gateways])
    configs: dict[str, str] = {}
    transcripts = _transcript_ends(lab)
    clock = _Clock()
    passed = False
    own_pki = Pki() if case.pki and pki is None else None  # a session passes its own, made once
    pki = pki or own_pki
    with lab.reconfigured():  # the lab's warm snapshot afterwards
        try:
            stop_ike(gateways)
            baseline = empty_kernels(gateways)
            _change_lab(lab, case)
            if pki is not None and case.pki:
                _install_certificates(gateways, context, pki)
            configs = _configure(gateways, case, context, lab)
            for host, command in case.setup.before_start:
                lab.host(host).check(command)
            if case.setup.iked_flags:
                in_parallel(gateways, lambda h: h.check(h.platform.iked_flags_command(case.setup.iked_flags)))
            running = case.setup.daemons == "running"
            in_parallel(gateways, lambda h: stage.counters.__setitem__(h.name, h.ipsec_counters()))
            clock.lap("setup")
            if running:
                start_ike(gateways, order=_start_order(lab, case))
            else:
                in_parallel(gateways, lambda h: h.mark_ike_log())
            clock.lap("daemons started")
            for placed in case.steps:
                run_step(stage, placed.where, placed.step)
            clock.lap("steps")
            check_health(gateways, baseline, running)
            stage.log += [f"leftover, known: {line}" for line in stop_and_check_leftovers(gateways, baseline)]
            clock.lap("health and leftovers")
            passed = True
        finally:
            if own_pki is not None:
                own_pki.close()  # its CA keys with it
            if evidence is not None:
                _save_evidence(lab, stage, configs, secrets, evidence, transcripts, full=not passed)
                clock.lap("evidence")
    clock.lap("lab restored")
    return Outcome(time.monotonic() - started, tuple(stage.log), tuple(clock.phases))


def _start_order(lab: Lab, case: Case) -> list[list[str]] | None:
    """The case's own start order (`start_first`), else the lab's (its passive gateways first)."""
    if not case.setup.start_first:
        return None
    names = [g.name for g in lab.gateways()]
    return [list(case.setup.start_first), [n for n in names if n not in case.setup.start_first]]


def _change_lab(lab: Lab, case: Case) -> None:
    """The topology changes a case asks for, on the running lab."""
    assert lab.topology
    if case.setup.sysctl:
        in_parallel(
            lab.gateways(),
            lambda h: h.apply([h.platform.sysctl_command(n, v) for n, v in case.setup.sysctl]),
        )
    if case.setup.ipv6:
        plan = ipv6_plan(lab.topology)

        def six(h: Host) -> None:
            p = plan[h.name]
            addresses = [(a.interface_index, str(a.address)) for a in p.addresses]
            gateway = str(p.gateway) if p.gateway else None
            h.apply(list(h.platform.ipv6_actions(addresses, gateway, p.forwarding)))

        in_parallel(lab.hosts.values(), six)
    if case.setup.block_plain_ping:
        in_parallel(lab.gateways(), lambda h: h.check(h.platform.plain_ping_filter_command()))
    if case.setup.masquerade:
        link = lab.topology.links[case.setup.masquerade]
        gateways = {g.name for g in lab.topology.gateways}
        router = lab.host(next(h for h in link.ends if h not in gateways))
        outside = next(i.link for i in router.spec.interfaces if i.link != link.name)
        router.check(router.platform.masquerade_command(str(link.subnet), router.interface(outside)))


KEYGEN_SECONDS = 180.0  # an RSA 2048 key in a guest: 2.4 s on a quiet machine, far more on a loaded one
CERTS_BUNDLE = "/tmp/ikedlab-certs.txt"


def _keyed(gateways: list[Host]) -> list[Host]:
    """The gateways that get the regress's key and certificates: iked's (another daemon gets the CAs only,
    enough for a client that authenticates with EAP and checks the responder's certificate)."""
    return [h for h in gateways if h.platform.ike_conf_format == "iked.conf"]


def _install_certificates(gateways: list[Host], context: CaseContext, pki: Pki) -> None:
    """The gateway's fresh RSA key (made in the gateway, it never leaves it) in the platform's place, then
    the regress's certificates over its public half and the CAs each side trusts, in one file split in the
    guest (one console round trip for all of them)."""
    public: dict[str, str] = {}

    def install_key(h: Host) -> None:
        # In the foreground, nothing else typed meanwhile: made in the background while the console went on,
        # the key's 100 % CPU in a one-CPU emulated guest made the serial line lose typed characters (a
        # quote lost, the shell at its `> ` prompt, 60 s waited: three cases of one run).
        p = h.platform
        public[context.hosts[h.name].side] = h.check(
            f"(umask 077; openssl genrsa -out {p.private_key} 2048 2>/dev/null) && "
            f"openssl rsa -in {p.private_key} -pubout -out {p.public_key} 2>/dev/null && cat {p.public_key}",
            timeout=KEYGEN_SECONDS,
        ).output

    in_parallel(_keyed(gateways), install_key)
    files = pki.files(public, tuple(context.hosts[h.name].side for h in gateways))

    def install(h: Host) -> None:
        mine = files[context.hosts[h.name].side]
        sections = [(f"{h.platform.certs_dir}/{n}", t) for n, t in mine.certs.items()]
        sections += [(f"{h.platform.ca_dir}/{n}", t) for n, t in mine.cas.items()]
        bundle = "".join(f"----- file {path}\n{text.rstrip()}\n" for path, text in sections)
        h.write_file(CERTS_BUNDLE, bundle, 0o644)
        split = "awk '/^----- file /{f = $3; next} {print > f}'"
        folders = f"{h.platform.certs_dir} {h.platform.ca_dir}"
        h.check(f"mkdir -p {folders} && (umask 022; {split} {CERTS_BUNDLE}) && rm -f {CERTS_BUNDLE}")

    in_parallel(gateways, install)


def _configure(gateways: list[Host], case: Case, context: CaseContext, lab: Lab) -> dict[str, str]:
    """Each gateway's configuration from the case's template, written and judged by its daemon's check."""
    assert lab.topology
    configs: dict[str, str] = {}
    if case.setup.daemons == "stopped":
        return configs
    for h in gateways:
        found = case.template_for(h.name, h.platform.ike_conf_format)
        assert found, f"{case.name}: no template for {h.name} (why_not says so first)"
        name, text = found
        peer = lab.topology.peer_of(h.spec).name
        configs[h.name] = render(case, name, text, context, h.name, peer)

    def write(h: Host) -> None:
        try:
            write_ike_conf(h, configs[h.name], f"{case.name}/{h.name}.conf (rendered)")
        except ProvisionError as e:
            raise CaseError([e.message, *e.details]) from None

    in_parallel(gateways, write)
    return configs


def _transcript_ends(lab: Lab) -> dict[str, int]:
    """Where each console transcript of the lab ends now: the case's own part starts there."""
    folder = lab.run_dir / "console"
    return {p.name: p.stat().st_size for p in folder.glob("*.log")} if folder.is_dir() else {}


def _save_evidence(
    lab: Lab,
    stage: Stage,
    configs: dict[str, str],
    secrets: dict[str, str],
    folder: Path,
    transcripts: dict[str, int],
    full: bool,
) -> None:
    """The case's evidence before the lab is restored: the steps' log, the rendered configurations, each
    gateway's daemon log and the case's part of the console transcripts; after a failure also what the lab's
    own evidence has (SAs, kernel state, counters, versions, serial logs). Then every text in the folder
    without the case's secrets."""
    folder.mkdir(parents=True, exist_ok=True)
    save_log(stage, folder)
    try:
        if full:
            lab.save_evidence(folder)
        else:
            for h in lab.gateways():
                (folder / f"{h.name}.iked.log").write_text(scrub(h.iked_log()))
    except (IkedlabError, OSError) as e:
        (folder / "evidence-problem.txt").write_text(f"could not collect everything: {e}\n")
    console = folder / "console"
    console.mkdir(parents=True, exist_ok=True)
    for path in sorted((lab.run_dir / "console").glob("*.log")):
        with path.open("rb") as f:  # the lab's transcripts run on across cases: only this case's part
            f.seek(transcripts.get(path.name, 0))
            (console / path.name).write_bytes(f.read())
    out = folder / "configs"
    out.mkdir(parents=True, exist_ok=True)
    for host, text in configs.items():
        kind = lab.host(host).platform.ike_conf_format
        (out / f"{host}.{kind}").write_text(text)
    blank_secrets(folder, secrets)


def blank_secrets(folder: Path, secrets: dict[str, str]) -> None:
    """Every text file under `folder` without the case's secrets, as written or as iked logs them (the hex
    of their bytes), and scrubbed of private keys and SA keys (lab.redact.scrub)."""
    forms = []
    for name, value in secrets.items():
        forms.append((value, f"[{name} redacted]"))
        forms.append((value.encode().hex(), f"[{name} redacted]"))
    for path in folder.rglob("*"):
        if not path.is_file() or path.suffix == ".pcap":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        clean = text
        for value, mark in forms:
            clean = clean.replace(value, mark)
        clean = scrub(clean)
        if clean != text:
            path.write_text(clean)
