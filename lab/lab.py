"""A named lab's lifecycle: up, attach, status, down; its state file and run directory.

The run directory holds everything a human may want after a run: console transcripts, serial logs, iked
logs, captures, the rendered configs. `down` finds the lab's domains through libvirt's metadata, so it cleans
up after a half-finished `up` or a lost state file too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import gate, interrupts, ownership, progress, settings, snapshot
from lab import topology as topo
from lab.bundle import record_media, scrub
from lab.command import run
from lab.console import ChannelLock, Console, Transcript
from lab.errors import ConsoleBusy, HypervisorError, IkedlabError, LabError, SnapshotError
from lab.host import Host
from lab.hypervisor import (
    CONSOLE_CONNECTED,
    SLOW_START_SECONDS,
    DomainSpec,
    Hypervisor,
    LabDomain,
    Nic,
    check_ports_free,
    detect_accel,
    domain_name,
    domain_xml,
    lab_ports,
    mac_address,
    slow_start_reason,
)
from lab.images import default_cache_dir, mark_in_use
from lab.plan import Options, Plan, build_plan, with_user_confs
from lab.platforms import BootMedia, IkedChoice, Platform, get_platform, load_topology, resolve_platforms
from lab.progress import step
from lab.provision import (
    exchange_keys,
    in_parallel,
    install_iked_conf,
    provision,
    restart_tunnel,
    tunnel_probe,
)

DEFAULT_NAME = settings.LAB_NAME
EVIDENCE_PROBLEM = "(evidence)"  # save_evidence's key for what could not be had
EVIDENCE_TAIL = 8  # lines of iked's log shown beside a failure
EVIDENCE_TIMEOUT = 15.0  # seconds per reading: a guest that does not answer must not hold up cleanup
VERIFY_SECONDS = 30.0  # a restored lab's tunnel is already up: this only bounds a sick one


def state_root() -> Path:
    return settings.state_dir()


@dataclass(frozen=True)
class HostStatus:
    """One row of `ikedlab status`."""

    host: str
    platform: str
    state: str  # running, stopped, no answer, busy: in use by ...
    addresses: str
    tunnel: str  # "" for a host that is no gateway
    healthy: bool


@dataclass
class LabState:
    """What `up` decided, saved so that later commands (status, exec, scenarios) can attach."""

    name: str
    topology: str  # path of the topology file
    platforms: dict[str, str]  # host -> platform
    accel: str
    peer_any: list[str]
    created: float
    iked_conf: dict[str, str] = field(default_factory=dict)  # host -> the user's own iked.conf text
    expect_failure: str | None = None  # `up --expect-failure`: the iked error this lab reproduces
    release: str | None = None  # `up --release`
    daemons: dict[str, str] = field(default_factory=dict)  # gateway -> its IKE daemon ("iked 7.4-1")
    snapshot_key: str = ""  # the inputs' digest: `reset` restores only a snapshot of exactly this lab


class Lab:
    def __init__(self, name: str = DEFAULT_NAME, run_dir: Path | None = None) -> None:
        if problem := gate.LAB.problem(name):
            raise LabError(problem)
        self.name = name
        self.run_dir = run_dir or state_root() / "labs" / name
        self.state_file = self.run_dir / "state.json"
        self._hypervisor: Hypervisor | None = None
        self.hosts: dict[str, Host] = {}
        self.topology: topo.Topology | None = None
        self.transcript: Transcript | None = None
        self.options = Options()
        self.platforms: dict[str, Platform] = {}  # host -> its platform, resolved once by up or attach
        self._claim: ownership.Claim | None = None
        self.provisioned_options = self.options  # what `up` provisioned; `reset` brings these back
        self.restored_in: float | None = None  # seconds the last warm restore took, proof of health included
        self._media: dict[str, BootMedia] = {}  # host -> what `up` booted it from
        self._proven: set[str] = set()  # hosts the last verify found healthy (shell answers, SAs up)

    # --- ownership -----------------------------------------------------------------------------------------
    def claim(
        self, force: bool = False, command: str | None = None, only_this_checkouts: bool = False
    ) -> None:
        """Own this lab for as long as this object lives (until close()); refuse if a live process owns it,
        unless `force`. Taken again by the same Lab, it is a no-op. `only_this_checkouts`: also refuse a lab
        last owned by another checkout's ikedlab (a scenario run removes only what its own runs left)."""
        if self._claim is not None:
            return
        before = ownership.previous_owner(self.run_dir)
        if only_this_checkouts and before and before.checkout != ownership.CHECKOUT:
            raise LabError(
                f"lab '{self.name}' was last used by {before.describe()}: another checkout's lab",
                f"remove it yourself with `{ownership.ikedlab_for(self.name)} down` if it is yours to remove",
            )
        try:
            self._claim = ownership.claim(self.name, self.run_dir, command)
        except LabError as e:
            if not force or "is in use by" not in e.message:
                raise
            progress.say(f"  --force: {e.message}; going ahead")

    def release(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    # --- state ---------------------------------------------------------------------------------------------
    @property
    def hypervisor(self) -> Hypervisor:
        if self._hypervisor is None:
            self._hypervisor = Hypervisor()
        return self._hypervisor

    def state(self) -> LabState:
        try:
            return LabState(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            raise LabError(
                f"lab '{self.name}' is not up", f"start it with `{ownership.ikedlab_for(self.name)} up`"
            ) from None
        except (ValueError, TypeError) as e:
            raise LabError(
                f"{self.state_file}: unreadable state ({e})",
                f"`{ownership.ikedlab_for(self.name)} down` cleans it up",
            ) from None

    def save_state(self, **changes: object) -> LabState:
        """Record a change to a running lab (e.g. a gateway's iked.conf swapped) in its state file."""
        state = dataclasses.replace(self.state(), **changes)  # type: ignore[arg-type]
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        return state

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            known = ", ".join(self.hosts) or "none"
            raise LabError(f"no host '{name}' in lab '{self.name}' (hosts: {known})")
        return self.hosts[name]

    # --- up ------------------------------------------------------------------------------------------------
    def up(
        self,
        topology_path: Path | None = None,
        platform: str = settings.PLATFORM,
        options: Options | None = None,
        keep_on_failure: bool = False,
        release: str | None = None,
        iked_conf_files: dict[str, Path] | None = None,
        force: bool = False,
        tunnel: Callable[[list[Host]], object] | None = None,
        expect_failure: str | None = None,
        iked: dict[str, IkedChoice] | None = None,
        cold: bool = False,
        save_snapshot: bool = True,
    ) -> str:
        """Bring the lab up to an established tunnel: restored from its warm snapshot when one matches every
        input exactly (unless `cold`), else booted and provisioned, then saved as the new snapshot (not when
        `tunnel` waits for something else: such a lab is a reproduction, not the provisioned state).
        Returns "restored" or "cold".

        Everything that reaches a guest is checked first: the topology, the platforms, and each user's
        iked.conf (`iked_conf_files`, host -> file) by the host's iked; nothing is created before.
        `platform` is for hosts whose topology names none; `release` pins the release of platforms that
        boot a cached golden image of one (OpenBSD), the newest cached when None. `tunnel`, when given,
        waits in place of the established tunnel (`up --expect-failure` waits for iked's error). `iked`
        (host -> choice) picks a gateway's iked over the topology's `iked:` version: another packaged version
        or a local build.
        """
        options = options or Options()
        topology = load_topology(topology_path)
        platforms = resolve_platforms(topology, platform)
        options = with_user_confs(options, iked_conf_files or {}, topology)
        # Fails before anything is created when an image is missing.
        media = self._snapshot_media(host_media(topology, platforms, release, iked or {}))
        self.claim(force)  # validated: from here on this process changes the lab
        hv = self.hypervisor
        if hv.domains(self.name):
            raise LabError(
                f"lab '{self.name}' is already up",
                f"`{ownership.ikedlab_for(self.name)} down` first, or pick another --name",
            )
        wires = self._wires(topology)
        check_ports_free([p for ends in wires.values() for _, p in ends], self.name)

        probe = next((m.kernel for m in media.values() if m.kernel), None)  # a kernel to try KVM with
        accel = detect_accel(probe, default_cache_dir())
        progress.say(
            f"  accelerator: {'KVM' if accel.kind == 'kvm' else 'software emulation (TCG)'} — {accel.reason}"
        )
        try:
            self._reset_run_dir()
        except OSError as e:
            raise ownership.state_error(self.name, e) from None
        record_media(self.run_dir, {platforms[h].name: m for h, m in media.items()}, release)  # for bundles
        names = {host: p.name for host, p in platforms.items()}
        options = dataclasses.replace(options, platforms=names)
        plan = build_plan(topology, platforms, options)
        specs = self._domain_specs(topology, platforms, accel.kind, media, wires)
        warm = tunnel is None  # a lab waiting for an expected failure is never saved nor restored
        inputs = self._snapshot_inputs(topology, plan, specs, media)
        state = LabState(
            self.name,
            str(topology.path.resolve()),
            names,
            accel.kind,
            list(options.peer_any),
            time.time(),
            dict(options.iked_conf),
            expect_failure=expect_failure,
            release=release,
            daemons={g.name: media[g.name].daemon for g in topology.gateways if media[g.name].daemon},
            snapshot_key=inputs.key if warm else "",
        )
        self.options = self.provisioned_options = options
        self.platforms = platforms
        self.topology = topology
        self._media = media
        # The first Ctrl-C says "stopping, cleaning up…" at once; the cleanup then runs to its end.
        with interrupts.guarded() as guard:
            try:
                try:
                    self.state_file.write_text(json.dumps(asdict(state), indent=2))
                except OSError as e:
                    self.state_file.unlink(missing_ok=True)
                    raise ownership.state_error(self.name, e) from None
                self._save_rendered_configs(plan)
                if warm and not cold:
                    snap, why = snapshot.usable(self.name, inputs)
                    if why:
                        progress.say(f"  {why}: cold boot")
                    if snap and self._restored(snap):
                        return "restored"
                self._boot(specs)
                provision(plan, self.hosts, tunnel)
                # At once, not in the background: saving pauses every guest and hands back new consoles,
                # which would cut into a learner's session, and a later cut could hold their changes.
                if warm and save_snapshot and not self._saved_and_restored(inputs):
                    progress.say("  cold boot again, without a warm snapshot")
                    self._boot(specs)
                    provision(plan, self.hosts, tunnel)
            except BaseException as e:
                guard.shield()
                if self.hosts and not isinstance(e, KeyboardInterrupt):  # an interrupt wants out now
                    self._keep_evidence()
                if not keep_on_failure:
                    self.down(quiet=True)
                raise
        return "cold"

    def _keep_evidence(self) -> None:
        """After a failed `up`, before any guest goes: what a human needs to tell why, in the run dir."""
        folder = self.run_dir / "evidence"
        shutil.rmtree(folder, ignore_errors=True)
        tails = self.save_evidence(folder)
        if (problem := tails.get(EVIDENCE_PROBLEM)) is not None:
            progress.say(f"  evidence: {problem}")
        progress.say(f"  evidence of this failed up (iked logs, SAs, transcripts): {folder}")

    def save_evidence(self, folder: Path) -> dict[str, str]:
        """Copy transcripts, serial logs and rendered configs to `folder`; fetch from each gateway iked's log,
        `ikectl show sa` and the kernel's SA state. Returns each gateway's last lines of iked's log (and,
        under EVIDENCE_PROBLEM, what could not be had). Best effort: a dead guest does not stop the rest."""
        folder.mkdir(parents=True, exist_ok=True)
        tails: dict[str, str] = {}
        problems: list[str] = []
        for sub in ("console", "serial", "configs"):
            if (self.run_dir / sub).is_dir() and folder != self.run_dir / sub:
                shutil.copytree(self.run_dir / sub, folder / sub, dirs_exist_ok=True)
        for host in (h for h in self.hosts.values() if h.spec.ipsec):
            for suffix, command in host.evidence_commands().items():
                try:
                    text = scrub(host.run(command, timeout=EVIDENCE_TIMEOUT).output)  # no SA keys kept
                except IkedlabError as e:
                    problems.append(f"{host.name}: {suffix} not fetched ({e.message})")
                    continue
                (folder / f"{host.name}.{suffix}").write_text(text)
                if suffix == "iked.log":
                    tails[host.name] = "\n".join(text.strip().splitlines()[-EVIDENCE_TAIL:])
        if problems:
            tails[EVIDENCE_PROBLEM] = "; ".join(problems)
        return tails

    def _wires(self, topology: topo.Topology) -> dict[str, list[tuple[str, int]]]:
        """Each link's two ends as (host, local UDP port); the other end's port is the remote one."""
        ports = iter(lab_ports(self.name))
        wires = {}
        for link in topology.links.values():
            wires[link.name] = [(host, next(ports)) for host in link.ends]
        return wires

    def _reset_run_dir(self) -> None:
        for sub in ("console", "serial", "disks", "configs", "captures", "artifacts"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        (self.run_dir / "impairments.json").unlink(missing_ok=True)  # a new lab's links are clean
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _domain_specs(
        self,
        topology: topo.Topology,
        platforms: dict[str, Platform],
        accel: str,
        media: dict[str, BootMedia],
        wires: dict[str, list[tuple[str, int]]],
    ) -> list[DomainSpec]:
        specs = []
        for host in topology.hosts.values():
            nics = []
            for iface in host.interfaces:
                ends = wires[iface.link]
                local = next(p for h, p in ends if h == host.name)
                remote = next(p for h, p in ends if h != host.name)
                nics.append(Nic(mac_address(self.name, host.name, iface.index), local, remote))
            platform = platforms[host.name]
            specs.append(self._domain_spec(host.name, platform, accel, media[host.name], tuple(nics)))
        return specs

    def _boot(self, specs: list[DomainSpec]) -> None:
        hv = self.hypervisor
        with step(f"boot: {len(specs)} guests created, consoles attached"):
            told_slow = False
            for spec in specs:
                if spec.disk and spec.backing:
                    # Each guest writes to its own throw-away overlay; the golden image is never changed.
                    spec.disk.parent.mkdir(parents=True, exist_ok=True)
                    overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
                    run([*overlay, "-b", spec.backing, spec.disk])
                seconds = hv.create(spec, paused=True)
                if seconds > SLOW_START_SECONDS and not told_slow:
                    progress.say(f"  {slow_start_reason(seconds)}")
                    told_slow = True
            self._start_consoles([s.host for s in specs])
        with step("boot: every guest at a shell"):
            in_parallel(self.hosts.values(), self._wait_booted)

    def _start_consoles(self, hosts: list[str], opened: bool = False) -> None:
        """Control consoles on paused guests, then every guest resumed: nothing a guest prints is lost.
        The one way guests start talking, for a cold boot and a restore alike (`opened`: the restore opened
        each console as soon as its guest was back)."""
        if not opened:
            for name in hosts:
                self._open_control_console(name)
        for name in hosts:
            self.hypervisor.resume(domain_name(self.name, name))

    def _open_control_console(self, name: str) -> None:
        """A new control console on a (paused) guest; a restored QEMU has new ptys: the same Host gets it."""
        assert self.topology
        self.transcript = self.transcript or Transcript(self.run_dir / "console")
        platform = self.platforms[name]
        console = self._console(name, platform)
        if name in self.hosts:
            self.hosts[name].console = console
        else:
            self.hosts[name] = Host(self.topology.host(name), platform, console, self.run_dir / "artifacts")

    def _wait_booted(self, host: Host) -> None:
        ready = host.platform.login.ready
        host.console.wait_for(ready, settings.BOOT, "boot to the console (ready banner or login)")
        host.console.attach()

    def _domain_spec(
        self, host: str, platform: Platform, accel: str, media: BootMedia, nics: tuple[Nic, ...]
    ) -> DomainSpec:
        spec = DomainSpec(
            lab=self.name,
            host=host,
            platform=platform.name,
            accel=accel,
            nics=nics,
            serial_log=self.run_dir / "serial" / f"{host}.log",
            memory_mib=platform.memory_mib,
        )
        if platform.facts.boot == "kernel":
            return dataclasses.replace(
                spec, kernel=media.kernel, initrd=media.initrd, cmdline=platform.kernel_cmdline(media, host)
            )
        assert media.disk, f"{platform.name} boots from a disk but its boot media has none"
        overlay = self.run_dir / "disks" / f"{host}.qcow2"  # made by _boot, kept with a snapshot
        return dataclasses.replace(spec, disk=overlay, backing=media.disk)

    def _console(
        self,
        host: str,
        platform: Platform,
        lock_timeout: float | None = None,
        lock: ChannelLock | None = None,
    ) -> Console:
        """ikedlab's control console on one guest (its second serial port), not yet logged in.

        The one place a console is opened: `up`, `attach` and a restore that gives the guest a new pty
        (see reattach) all come here. The host's channel lock is taken first, so two ikedlab processes
        wait for each other instead of taking the line from one another.
        """
        facts = platform.login
        return Console(
            host,
            self.hypervisor.console_argv(domain_name(self.name, host)),
            transcript=self.transcript,
            raw_log=self.run_dir / "console" / f"{host}.raw",
            user=facts.user,
            password=facts.password,
            password_prompt=facts.password_prompt,
            lock=lock or ChannelLock(self.run_dir / "locks" / f"{host}.console", host),
            lock_timeout=lock_timeout,
            on_wait=progress.say,
            connected=CONSOLE_CONNECTED,
        )

    def reattach(self, name: str) -> Host:
        """Open a host's control console again (after a restore QEMU has a new pty), in a known state."""
        host = self.host(name)
        lock, host.console.lock = host.console.lock, None  # kept across: nobody slips in between
        host.console.close()
        host.console = self._console(name, host.platform, lock=lock)
        host.console.attach()
        return host

    def _save_rendered_configs(self, plan: Plan) -> None:
        configs = self.run_dir / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        for gateway in plan.gateways:
            assert gateway.iked_conf
            (configs / f"{gateway.name}.iked.conf").write_text(gateway.iked_conf.content)

    # --- warm snapshots ------------------------------------------------------------------------------------
    def _snapshot_inputs(
        self,
        topology: topo.Topology,
        plan: Plan,
        specs: list[DomainSpec],
        media: dict[str, BootMedia],
    ) -> snapshot.Inputs:
        """Everything a provisioned lab is made of, each by name, so a stale snapshot says what changed."""
        options = plan.options
        values = {
            "lab name": self.name,
            "topology": snapshot.digest(topology.path.read_bytes()),
            "provisioning code": snapshot.code_version(),
            "hypervisor": self.hypervisor.version(),
            "options": snapshot.digest(
                json.dumps(
                    asdict(dataclasses.replace(options, iked_conf_sources={})), sort_keys=True, default=str
                )
            ),
        }
        for host, boot in media.items():
            # The image's content, not where its files are: the cache's `current` link moving (another
            # checkout's build) changes no snapshot. Files only for an image whose build is not reproducible.
            values[f"image {host}"] = boot.identity or snapshot.file_identity(
                [f for f in (boot.kernel, boot.initrd, boot.disk) if f]
            )
        for spec in specs:
            values[f"domain {spec.host}"] = snapshot.digest(domain_xml(spec))
            # Every file and command provisioning puts in the guest, the rendered iked.conf included.
            values[f"files {spec.host}"] = snapshot.digest(repr(plan.hosts[spec.host].actions()))
        daemons = sorted({m.daemon for m in media.values() if m.daemon})
        summary = {
            "topology": topology.path.name,
            "platforms": ",".join(sorted(set(options.platforms.values()))),
            "images": " ".join(sorted({values[f"image {h}"][:12] for h in media})),
        }
        if daemons:
            summary["IKE"] = ",".join(daemons)
        if options.iked_conf:
            summary["own iked.conf"] = ",".join(sorted(options.iked_conf))
        return snapshot.Inputs(values, summary)

    def _snapshot_media(self, media: dict[str, BootMedia]) -> dict[str, BootMedia]:
        """Each host boots the image files its lab's snapshot booted, while they exist and hold the same image
        (same identity): the saved domains name those files, and another checkout's build of the same image
        into a new cache folder must neither make the snapshot stale nor take its files away."""
        try:
            snap = snapshot.load(self.name)
        except SnapshotError:
            return media  # said, and booted cold, by `up`
        if snap is None:
            return media
        kept = dict(media)
        for host, boot in media.items():
            booted = snap.booted(host)
            if not boot.identity or booted.get("identity") != boot.identity:
                continue
            files = {k: Path(booted[k]) if booted.get(k) else None for k in ("kernel", "initrd", "disk")}
            if any((getattr(boot, k) is None) != (f is None) for k, f in files.items()):
                continue
            if all(f.is_file() for f in files.values() if f):
                kept[host] = dataclasses.replace(
                    boot, kernel=files["kernel"], initrd=files["initrd"], disk=files["disk"]
                )
                mark_in_use(next(f for f in files.values() if f))
        return kept

    def _boot_record(self, host: str) -> dict[str, str]:
        """The image files `host` booted and the image's identity, for its snapshot entry."""
        boot = self._media.get(host)
        if boot is None:
            return {}
        files = {"kernel": boot.kernel, "initrd": boot.initrd, "disk": boot.disk}
        return {**{k: str(f) for k, f in files.items() if f}, "identity": boot.identity}

    def save_snapshot(self, inputs: snapshot.Inputs) -> snapshot.Snapshot:
        """Save the running lab as one consistent cut: every guest paused first, then each one's memory
        (and OpenBSD's disk overlay) written. The guests stop; `_restored` brings them back."""
        hv = self.hypervisor
        domains = self.domains()
        with step(f"snapshot: {len(domains)} guests paused together, memory saved"):
            quiesce = [h for h in self.hosts.values() if h.platform.before_snapshot_command()]
            in_parallel(quiesce, lambda h: h.run(h.platform.before_snapshot_command() or "true"))
            for host in self.hosts.values():
                host.console.close()  # and its channel lock: a restored QEMU has new ptys, opened anew
            for d in domains:
                hv.suspend(d.name)
            writer = snapshot.Writer(self.name, inputs)
            try:
                in_parallel(domains, lambda d: hv.save(d.name, writer.memory_path(d.host)))
                for d in domains:
                    disk = self.run_dir / "disks" / f"{d.host}.qcow2"
                    writer.add(d.host, d.name, disk if disk.exists() else None, self._boot_record(d.host))
                return writer.commit()
            except BaseException:
                writer.abandon()
                raise

    def _saved_and_restored(self, inputs: snapshot.Inputs) -> bool:
        """Save the freshly provisioned lab and bring it back from the snapshot, which proves the snapshot.
        False (said in one line, the lab's guests removed, no snapshot kept) when either fails."""
        try:
            saved = self.save_snapshot(inputs)
        except IkedlabError as e:
            progress.say(f"  could not save a warm snapshot of lab '{self.name}': {e.message}")
            self._remove_guests()
            return False
        if self._restored(saved):
            return True
        snapshot.remove(self.name)
        return False

    def _remove_guests(self) -> None:
        for host in self.hosts.values():
            host.console.close()
        self.hypervisor.destroy_lab(self.name)

    def _restored(self, snap: snapshot.Snapshot) -> bool:
        """Restore `snap` and prove the lab healthy; on any failure say why in one line, remove what was
        started, and return False (the caller boots cold)."""
        started = time.monotonic()
        try:
            self._restore(snap)
            self.verify(resumed=True)
        except IkedlabError as e:
            progress.say(f"  warm snapshot {snap.key[:12]} of lab '{self.name}' not used: {e.message}")
            self._remove_guests()
            return False
        self.restored_in = time.monotonic() - started
        return True

    def _restore(self, snap: snapshot.Snapshot) -> None:
        hv = self.hypervisor
        hosts = list(snap.hosts)
        (self.run_dir / "serial").mkdir(parents=True, exist_ok=True)  # the saved XML logs serial there
        (self.run_dir / "impairments.json").unlink(missing_ok=True)  # the links are as they were saved
        for host in hosts:
            disk = snap.disk(host)
            if disk:  # a saved image holds RAM only: the disk must be as it was at the cut
                target = self.run_dir / "disks" / f"{host}.qcow2"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(disk, target)
        took: dict[str, float] = {}

        self.transcript = self.transcript or Transcript(self.run_dir / "console")  # before the threads

        def restore(host: str) -> None:
            started = time.monotonic()
            hv.restore(snap.memory_image(host))
            took[host] = time.monotonic() - started
            self._open_control_console(host)  # connecting while the other guests are still restored

        with step(f"restore: {len(hosts)} guests from warm snapshot {snap.key[:12]}, in parallel, paused"):
            in_parallel(hosts, restore)
        for host in hosts:
            progress.record(f"restore: libvirt restore of {host}", took[host])
        with step("restore: guests resumed together"):
            self._start_consoles(hosts, opened=True)

    def verify(self, timeout: float = VERIFY_SECONDS, resumed: bool = False) -> None:
        """The lab is healthy: IKE SA ESTABLISHED on every gateway, and one ping crosses the tunnel.

        `resumed`: the guests were just restored, their consoles new: each host first proves its shell (one
        sync line), then does its part of the proof, every host at once; one command each while all is
        well. The slowest shell and the slowest check are printed."""
        assert self.topology
        probe = tunnel_probe(self.topology)
        gateways = {g.name for g in self.topology.gateways}
        shell: dict[str, float] = {}
        check: dict[str, float] = {}

        def prove(host: Host) -> None:
            started = time.monotonic()
            if resumed:
                host.console.attach(resumed=True)
            shell[host.name] = time.monotonic() - started
            if host.name in gateways:
                host.wait_established(timeout)
            if probe and host.name == probe[0]:
                host.wait_until(
                    f"a ping from {host.name} to {probe[1]} across the tunnel",
                    lambda: host.ping(probe[1], count=1, timeout_s=1).received,
                    bool,
                    timeout,
                )
            check[host.name] = time.monotonic() - started - shell[host.name]

        what = "every shell answers, " if resumed else ""
        self._proven = set()
        with step(f"verify: {what}IKE SAs ESTABLISHED, one ping across the tunnel, every host at once"):
            in_parallel(self.hosts.values(), prove)
        self._proven = set(self.hosts)
        if resumed:
            slowest = max(shell, key=lambda h: shell[h])
            progress.record(f"verify: shell proven by one sync line (slowest: {slowest})", shell[slowest])
        slowest = max(check, key=lambda h: check[h])
        progress.record(f"verify: SAs and ping (slowest: {slowest})", check[slowest])

    def _own_snapshot(self) -> snapshot.Snapshot:
        """This lab's snapshot, taken of exactly the state it came up in; SnapshotError otherwise."""
        if self.topology is None:
            self._load_state()
        state = self.state()
        snap = snapshot.load(self.name)
        again = ownership.ikedlab_for(self.name)
        if snap is None or snap.key != state.snapshot_key:
            raise SnapshotError(
                f"lab '{self.name}' has no snapshot of the state it came up in",
                f"`{again} down` then `{again} up` (a cold up saves one)",
            )
        why = snap.problem()
        if why:
            raise SnapshotError(
                f"snapshot of lab '{self.name}' is corrupt: {why}", f"`{again} down` then `{again} up --cold`"
            )
        return snap

    def has_snapshot(self) -> bool:
        try:
            self._own_snapshot()
        except (SnapshotError, LabError):
            return False
        return True

    def reset(self) -> None:
        """Put a running lab back in its provisioned state from its snapshot: the learner's undo."""
        snap = self._own_snapshot()
        self.claim()
        self._remove_guests()
        self.options = self.provisioned_options
        self._restore(snap)
        self.verify(resumed=True)

    # --- attach to a running lab ---------------------------------------------------------------------------
    def attach(self, only: list[str] | None = None, lock_timeout: float | None = None) -> dict[str, Host]:
        """Consoles on a lab that is up (started by another process); each put in a known state.

        A console another ikedlab process holds is waited for (for ever when `lock_timeout` is None).
        """
        topology = self._load_state()
        running = {d.host for d in self.hypervisor.domains(self.name) if d.running}
        names = only or list(topology.hosts)
        for name in names:
            if name not in topology.hosts:
                raise LabError(f"no host '{name}' in lab '{self.name}' (hosts: {', '.join(topology.hosts)})")
            if name not in running:
                again = ownership.ikedlab_for(self.name)
                raise LabError(
                    f"host '{name}' of lab '{self.name}' is stopped",
                    f"`{again} down` and `{again} up` to rebuild the lab",
                )
        for name in names:
            self._open_host(name, lock_timeout)
        in_parallel([self.hosts[n] for n in names], lambda h: h.console.attach())
        return {n: self.hosts[n] for n in names}

    def _load_state(self) -> topo.Topology:
        """Topology, platforms and options of a lab that is up, from its state file."""
        state = self.state()
        topology = load_topology(state.topology)
        self.topology = topology
        self.platforms = {host: get_platform(name) for host, name in state.platforms.items()}
        self.options = self.provisioned_options = Options(
            peer_any=tuple(state.peer_any), iked_conf=state.iked_conf, platforms=state.platforms
        )
        return topology

    def _open_host(self, name: str, lock_timeout: float | None) -> Host:
        assert self.topology
        if name not in self.hosts:
            self.transcript = self.transcript or Transcript(self.run_dir / "console")
            platform = self.platforms[name]
            console = self._console(name, platform, lock_timeout)
            self.hosts[name] = Host(self.topology.host(name), platform, console, self.run_dir / "artifacts")
        return self.hosts[name]

    def status(
        self, answer_timeout: float = settings.STATUS_ANSWER, just_verified: bool = False
    ) -> list[HostStatus]:
        """Every host's state, whatever shape the lab is in: a stopped guest, a console that does not
        answer (or another ikedlab process holds for longer than `answer_timeout`), iked not running.
        `just_verified` (`up`, right after `verify`): what verify read is the answer, asked no second time."""
        topology = self.topology or self._load_state()
        running = {d.host for d in self.hypervisor.domains(self.name) if d.running}
        proven = self._proven if just_verified else set()

        def one(name: str) -> HostStatus:
            platform = self.platforms[name]
            spec = topology.host(name)
            addresses = ", ".join(f"{platform.interface_name(i.index)} {i.address}" for i in spec.interfaces)
            peer = topology.peer_of(spec).name if spec.ipsec else None
            row = HostStatus(name, platform.name, "stopped", addresses, "", healthy=False)
            if name not in running:
                return dataclasses.replace(row, tunnel="-" if peer else "")
            if name in proven:
                tunnel = f"ESTABLISHED with {peer}" if peer else ""
                return dataclasses.replace(row, state="running", tunnel=tunnel, healthy=True)
            try:
                host = self._open_host(name, answer_timeout)
                host.console.attach(answer_timeout)
            except ConsoleBusy as e:
                return dataclasses.replace(row, state=f"busy: in use by {e.holder}")
            except IkedlabError:
                return dataclasses.replace(row, state="no answer")
            row = dataclasses.replace(row, state="running", healthy=peer is None)
            if peer is None:
                return row
            try:
                result = host.run(platform.sa_command(), timeout=answer_timeout)
            except IkedlabError:
                return dataclasses.replace(row, state="no answer")
            if not result.ok:
                return dataclasses.replace(row, tunnel="iked not running")
            sas = platform.parse_sa(result.output)
            if sas.established:
                return dataclasses.replace(row, tunnel=f"ESTABLISHED with {peer}", healthy=True)
            return dataclasses.replace(row, tunnel=f"down (peer {peer}): {sas.describe()}")

        rows: dict[str, HostStatus] = {}

        def fill(name: str) -> None:
            rows[name] = one(name)

        with ThreadPoolExecutor(max_workers=len(topology.hosts)) as pool:
            list(pool.map(fill, topology.hosts))
        return [rows[name] for name in topology.hosts]

    @contextmanager
    def lent(self, name: str) -> Iterator[Host]:
        """Let another ikedlab process (an `ikedlab exec`) have this host's control console for a block."""
        host = self.host(name)
        host.console.close()
        try:
            yield host
        finally:
            self.reattach(name)

    def gateways(self) -> list[Host]:
        assert self.topology, "the lab is neither up nor attached"
        return [self.hosts[g.name] for g in self.topology.gateways]

    def plan(self) -> Plan:
        """The provisioning plan of this lab with its current options."""
        assert self.topology, "the lab is neither up nor attached"
        return build_plan(self.topology, self.platforms, self.options)

    def restore(self) -> None:
        """Put the tunnel back as the plan has it: right peer keys, its iked.conf, iked restarted."""
        plan = self.plan()
        gateways = self.gateways()
        exchange_keys(plan, gateways)
        in_parallel(gateways, lambda h: install_iked_conf(plan, h))
        restart_tunnel(gateways)

    @contextmanager
    def reconfigured(
        self,
        *,
        prepare: Callable[[], object] | None = None,
        undo: Callable[[], object] | None = None,
        **option_changes: Any,
    ) -> Iterator[Lab]:
        """Run a block on the lab changed, then put it back as `up` made it, whatever the block did.

        `option_changes` replace fields of Options (e.g. dpd_interval=5, peer_any=("resp",)); when there are
        any, the tunnel is rebuilt with them before the block. `prepare` changes a guest first (e.g. NAT on
        the router), `undo` reverts that before the lab is restored (in a finally, like the restore).
        A lab with a warm snapshot is put back by restoring it (`reset`): whatever the block did to the
        guests is gone and `undo` is not needed; without one, `undo` runs and the tunnel is re-provisioned.
        Not after Ctrl-C (`interrupts.stopping()`): the process is on its way out and takes the lab down;
        putting it back first only kept the user waiting.
        """
        normal = self.options
        changed = dataclasses.replace(normal, **option_changes)  # a misspelt option fails before any change
        try:
            self.options = changed
            if prepare:
                prepare()
            if option_changes:
                self.restore()
            yield self
        finally:
            self.options = normal
            if not interrupts.stopping():
                self._put_back(undo)

    def _put_back(self, undo: Callable[[], object] | None) -> None:
        if self.has_snapshot():
            self.reset()
            return
        try:
            if undo:
                undo()
        finally:
            self.restore()

    def detach(self) -> None:
        """Let go of the consoles (others may take them) but keep owning the lab."""
        for host in self.hosts.values():
            host.console.close()
        self.hosts.clear()

    def close(self) -> None:
        self.release()
        self.detach()
        if self.transcript:
            self.transcript.close()
        if self._hypervisor:
            self._hypervisor.close()
            self._hypervisor = None

    # --- status and down -----------------------------------------------------------------------------------
    def domains(self) -> list[LabDomain]:
        return self.hypervisor.domains(self.name)

    def down(self, quiet: bool = False, force: bool = False, snapshots: bool = False) -> list[str]:
        """Remove every domain of this lab and its disks; keep transcripts and captures for humans, and the
        lab's warm snapshot unless `snapshots`.

        Refused while another live process owns the lab (unless `force`); a dead owner's lab is free."""
        if self.run_dir.exists():  # no run directory: nobody ever owned the lab, nothing to claim
            self.claim(force)
        for host in self.hosts.values():
            try:
                host.console.close()  # ends any command still waiting on it (a worker of an interrupted up)
            except OSError:
                pass  # the guests go next all the same
        self.hosts.clear()
        removed = self.hypervisor.destroy_lab(self.name)
        shutil.rmtree(self.run_dir / "disks", ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        if snapshots and snapshot.remove(self.name) and not quiet:
            progress.say(f"lab '{self.name}': warm snapshot removed")
        if not quiet:
            progress.say(
                f"lab '{self.name}': removed {len(removed)} domain{'s' if len(removed) != 1 else ''}"
            )
        return removed


def host_media(
    topology: topo.Topology, platforms: dict[str, Platform], release: str | None, iked: dict[str, IkedChoice]
) -> dict[str, BootMedia]:
    """Each host's boot media: its platform's, with the iked its gateway runs (the topology's `iked:`
    version unless `iked` overrides it). Each distinct image is found or built once."""
    for name in iked:
        if name not in topology.hosts or not topology.hosts[name].ipsec:
            gateways = ", ".join(g.name for g in topology.gateways)
            raise LabError(f"iked for '{name}': not a gateway of {topology.path.name} (gateways: {gateways})")
    built: dict[tuple[str, IkedChoice], BootMedia] = {}
    media = {}
    for host in topology.hosts.values():
        platform = platforms[host.name]
        choice = iked.get(host.name, IkedChoice())
        if choice.version is None and host.iked:
            choice = dataclasses.replace(choice, version=host.iked)
        if choice != IkedChoice():
            platform.check_iked_choice(host.name, choice)
        key = (platform.name, choice)
        if key not in built:
            built[key] = platform.boot_media(release, choice)
        media[host.name] = built[key]
    return media


def lab_names() -> list[str]:
    """Labs with a state file or with domains in libvirt."""
    names = {p.parent.name for p in (state_root() / "labs").glob("*/state.json")}
    try:
        hv = Hypervisor()
        names |= {d.lab for d in hv.domains()}
        hv.close()
    except (HypervisorError, IkedlabError):
        pass
    return sorted(names)
