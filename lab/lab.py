"""A named lab's lifecycle: up, attach, reset, reconfigured, down; its state file and run directory.

The run directory holds everything a human may want after a run: console transcripts, serial logs, iked
logs, captures, the rendered configs. `down` finds the lab's domains through libvirt's metadata, so it cleans
up after a half-finished `up` or a lost state file too. The parts each have their module: the guests and
their consoles (guests), what each domain is (domains), warm snapshots (warm), the proof of health (verify),
evidence of a failure (evidence), status rows (status).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import (
    base,
    evidence,
    gate,
    interrupts,
    keeper,
    layers,
    ownership,
    progress,
    settings,
    snapshot,
    warm,
)
from lab import blueprint as recorded
from lab import topology as topo
from lab.blueprint import Blueprint, UpRequest
from lab.domains import host_media
from lab.errors import HypervisorError, IkedlabError, LabError, SnapshotError
from lab.guests import Guests
from lab.host import Host
from lab.hypervisor import Hypervisor, LabDomain
from lab.images import default_cache_dir
from lab.parallel import in_parallel
from lab.placement import load_topology, resolve_platforms
from lab.plan import Options, Plan, build_plan, judged, with_user_confs
from lab.platforms import Platform
from lab.private import SECRET_DIR, labs_dir
from lab.progress import Timing
from lab.provision import exchange_keys, install_ike_conf, restart_tunnel
from lab.redact import scrub
from lab.verify import VERIFY_SECONDS, verify
from lab.versions import record_media

DEFAULT_NAME = settings.LAB_NAME


#: The exercise a learner practises on in the running lab (lab/exercises/session.py): gone with `reset`.
EXERCISE = "exercise.json"


@dataclass(frozen=True)
class UpResult:
    """What `up` did."""

    restored: bool  # from the lab's warm snapshot, proven healthy (else booted and provisioned)
    seconds: float  # the whole `up`, by the clock
    restored_in: float | None  # seconds of the restore, proof of health included, when restored
    timings: tuple[Timing, ...]  # its steps, in order
    # Seconds from the restore of the lab's booted base (lab/base.py) to the tunnel, when `up` started there.
    based_in: float | None = None


class Lab:
    def __init__(self, name: str = DEFAULT_NAME, run_dir: Path | None = None) -> None:
        if problem := gate.LAB.problem(name):
            raise LabError(problem)
        self.name = name
        self.run_dir = run_dir or labs_dir() / name
        self.guests = Guests(name, self.run_dir)
        self.blueprint: Blueprint | None = None  # what `up` built, once up or read back (`read`)
        self.options = Options()  # what the lab runs with now (`reconfigured` changes it for a block)
        self._claim: ownership.Claim | None = None
        self.proven: set[str] = set()  # hosts the last verify found healthy (shell answers, SAs up)

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

    # --- what the lab is -----------------------------------------------------------------------------------
    @property
    def hypervisor(self) -> Hypervisor:
        return self.guests.hypervisor

    @property
    def hosts(self) -> dict[str, Host]:
        return self.guests.hosts

    @property
    def topology(self) -> topo.Topology | None:
        return self.guests.topology

    @property
    def platforms(self) -> dict[str, Platform]:
        """Host -> its platform, resolved once by up or attach."""
        return self.guests.platforms

    @property
    def blueprint_file(self) -> Path:
        return self.run_dir / recorded.FILE

    def read(self) -> Blueprint:
        """What `up` built for this lab, read from its run folder the first time (LabError when the lab is not
        up), with the changes made to it since (`reconfigure`)."""
        if self.blueprint is None:
            self._adopt(recorded.read(self.name, self.run_dir))
        assert self.blueprint
        return self.blueprint

    def _adopt(self, blueprint: Blueprint) -> None:
        self.blueprint = blueprint
        self.guests.topology = blueprint.topology
        self.guests.platforms = dict(blueprint.platforms)
        self.options = self.provisioned_options()

    def provisioned_options(self) -> Options:
        """The options the lab was provisioned with, and the iked.conf files `reconfigure` put in since."""
        assert self.blueprint
        options = self.blueprint.options
        return dataclasses.replace(options, ike_conf={**options.ike_conf, **recorded.swapped(self.run_dir)})

    def record_ike_conf(self, host: str, text: str) -> None:
        """A gateway of the running lab runs `text` now (`reconfigure`): kept until `reset` or `down`."""
        self.options = dataclasses.replace(self.options, ike_conf={**self.options.ike_conf, host: text})
        recorded.keep_swapped(self.run_dir, host, text)

    def _forget_changes(self) -> None:
        for record in (recorded.SWAPPED, EXERCISE):
            (self.run_dir / record).unlink(missing_ok=True)

    def host(self, name: str) -> Host:
        return self.guests.host(name)

    def gateways(self) -> list[Host]:
        assert self.topology, "the lab is neither up nor attached"
        return [self.hosts[g.name] for g in self.topology.gateways]

    def plan(self) -> Plan:
        """The provisioning plan of this lab with its current options."""
        assert self.topology, "the lab is neither up nor attached"
        return build_plan(self.topology, self.platforms, self.options)

    def domains(self) -> list[LabDomain]:
        return self.hypervisor.domains(self.name)

    # --- up ------------------------------------------------------------------------------------------------
    def up(self, request: UpRequest | None = None) -> UpResult:
        """Bring the lab up to an established tunnel: restored from its warm snapshot when one matches every
        input exactly (unless `request.cold`), else booted and provisioned, then saved as the new snapshot
        (not when `request.tunnel` waits for something else: such a lab is a reproduction).

        Everything that reaches a guest is checked first: the topology, the platforms, and each user's
        iked.conf by the iked its gateway will run (the image's own, or a local build; OpenBSD's iked judges
        in the guest); nothing is created before. The blueprint is recorded in the run folder for every
        later command.
        """
        request = request or UpRequest()
        started = time.monotonic()
        with progress.timed() as timings:
            restored_in, based_in = self._up(request)
        return UpResult(
            restored=restored_in is not None,
            seconds=time.monotonic() - started,
            restored_in=restored_in,
            timings=tuple(timings),
            based_in=based_in,
        )

    def _design(self, request: UpRequest) -> tuple[Blueprint, snapshot.Inputs | None]:
        """The lab's blueprint, every input checked, images found or built (ImageError when one is missing
        and cannot be built), and what its warm snapshot is made of (None: the lab is never saved). Claims
        the lab once everything checked out; creates nothing in libvirt."""
        topology = load_topology(request.topology)
        platforms = resolve_platforms(topology, request.platform)
        options = with_user_confs(request.options, request.ike_conf_files, topology)
        # Fails before anything is created when an image is missing.
        media = host_media(topology, platforms, request.release, dict(request.iked))
        media = warm.kept_media(self.name, media)
        judged(options, {host: m.judge for host, m in media.items()})  # by the iked each gateway will run
        self.claim(request.force)  # validated: from here on this process changes the lab
        if self.hypervisor.domains(self.name):
            raise LabError(
                f"lab '{self.name}' is already up",
                f"`{ownership.ikedlab_for(self.name)} down` first, or pick another --name",
            )
        draft = Blueprint(self.name, self.run_dir, topology, platforms, options, media, accel="")
        self.hypervisor.check_ports_free([p for ends in draft.wires.values() for _, p in ends], self.name)
        probe = next((m.kernel for m in media.values() if m.kernel), None)  # a kernel to try KVM with
        accel = self.hypervisor.accel(probe, default_cache_dir())
        progress.say(
            f"  accelerator: {'KVM' if accel.kind == 'kvm' else 'software emulation (TCG)'} — {accel.reason}"
        )
        for note in sorted({m.unverified for m in media.values() if m.unverified}):
            progress.say(f"  WARNING: {note}")
        blueprint = dataclasses.replace(
            draft, accel=accel.kind, release=request.release, expect_failure=request.expect_failure
        )
        # Never saved nor restored: a lab awaiting an expected failure, a remote host's (lab/volumes.py)
        if not request.warm or self.hypervisor.remote:
            return blueprint, None
        inputs = warm.inputs(blueprint, self.hypervisor.version())
        return dataclasses.replace(blueprint, snapshot_key=inputs.key), inputs

    def _up(self, request: UpRequest) -> tuple[float | None, float | None]:
        """`up`; the seconds its warm restore took, or those from its booted base to the tunnel (one of the
        two, or neither when it booted cold)."""
        blueprint, inputs = self._design(request)
        # A remote host's lab has no booted base either: its save files would be that host's.
        below = None if self.hypervisor.remote else base.inputs(blueprint, self.hypervisor.version())
        try:
            self._reset_run_dir()
        except OSError as e:
            raise ownership.state_error(self.name, e) from None
        media = {blueprint.platforms[h].name: m for h, m in blueprint.media.items()}
        record_media(self.run_dir, media, blueprint.release)  # for bundles
        self._adopt(blueprint)
        # The first Ctrl-C says "stopping, cleaning up…" at once; the cleanup then runs to its end.
        with interrupts.guarded() as guard:
            try:
                try:
                    blueprint.write()
                except OSError as e:
                    self.blueprint_file.unlink(missing_ok=True)
                    raise ownership.state_error(self.name, e) from None
                self._save_rendered_configs(blueprint.plan)
                if not request.cold:
                    why = None
                    if inputs:
                        snap, why = snapshot.usable(self.name, inputs)
                        if snap and (seconds := layers.restored(self, snap)) is not None:
                            return seconds, None
                    found, why_not = snapshot.usable(base.name(self.name), below) if below else (None, None)
                    if found:
                        if why:
                            progress.say(f"  {why}: from its booted base")
                        if (seconds := layers.from_base(self, found, request, inputs)) is not None:
                            return None, seconds
                    elif why or why_not:
                        progress.say(f"  {'; '.join(w for w in (why, why_not) if w)}: cold boot")
                layers.cold(self, request, inputs, below)
            except BaseException as e:
                guard.shield()
                if self.hosts and not isinstance(e, KeyboardInterrupt):  # an interrupt wants out now
                    evidence.keep_after_failed_up(self.run_dir, self.hosts.values())
                if not request.keep_on_failure:
                    self.down(quiet=True)
                raise
        return None, None

    def _reset_run_dir(self) -> None:
        for sub in ("console", "serial", "disks", "configs", "captures", "artifacts"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        (self.run_dir / "impairments.json").unlink(missing_ok=True)  # a new lab's links are clean
        self._forget_changes()
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _save_rendered_configs(self, plan: Plan) -> None:
        configs = self.run_dir / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        for gateway in plan.gateways:
            assert gateway.ike_conf
            # For people (evidence, bundles): a PSK in it is the lab's secret, kept only in secret/.
            (configs / f"{gateway.name}.iked.conf").write_text(scrub(gateway.ike_conf.content))

    def save_evidence(self, folder: Path, keys: set[str] | None = None) -> dict[str, str]:
        """The lab's evidence in `folder` (lab/evidence.py); each gateway's last lines of iked's log.
        `keys`: the SA keys the kernels printed are added there, for a leak check."""
        return evidence.save(self.run_dir, self.hosts.values(), folder, keys)

    # --- warm snapshots ------------------------------------------------------------------------------------
    def verify(self, timeout: float = VERIFY_SECONDS, resumed: bool = False) -> None:
        """The lab is healthy (lab/verify.py); the hosts it proved are kept for the status table."""
        assert self.topology
        self.proven = set()
        verify(self.topology, self.hosts, timeout, resumed)
        self.proven = set(self.hosts)

    def save_snapshot(self, inputs: snapshot.Inputs) -> snapshot.Snapshot:
        """Save the running lab as one consistent cut (the guests stop; `_restored` brings them back)."""
        assert self.blueprint
        return warm.save(self.guests, inputs, dict(self.blueprint.media))

    def _own_snapshot(self) -> snapshot.Snapshot:
        """This lab's snapshot, taken of exactly the state it came up in; SnapshotError otherwise."""
        return warm.own_snapshot(self.name, self.read().snapshot_key)

    def has_snapshot(self) -> bool:
        """The lab can be put back (`reset`): from its snapshot, or from its booted base."""
        try:
            self._own_snapshot()
        except (SnapshotError, LabError):
            try:
                return base.of(self.read(), self.hypervisor.version()) is not None
            except LabError:
                return False
        return True

    def reset(self) -> None:
        """Put a running lab back in its provisioned state from its snapshot: the learner's undo. A lab that
        came up from its booted base (and saved no snapshot) is put back from the base, then iked's part
        provisioned again."""
        try:
            snap: snapshot.Snapshot | None = self._own_snapshot()
            below = None
        except SnapshotError:
            snap, below = None, base.of(self.read(), self.hypervisor.version())
            if below is None:
                raise
        self.claim()
        self.guests.remove()
        self._forget_changes()  # the snapshot is the lab as `up` made it
        self.options = self.provisioned_options()
        if snap is not None:
            warm.restore(self.guests, snap)
            self.verify(resumed=True)
        elif below is not None and layers.from_base(self, below, UpRequest(), None) is None:
            raise SnapshotError(f"lab '{self.name}': its booted base did not come back")

    # --- attach to a running lab ---------------------------------------------------------------------------
    def attach(self, only: list[str] | None = None, lock_timeout: float | None = None) -> dict[str, Host]:
        """Consoles on a lab that is up (started by another process); each put in a known state.

        A console another ikedlab process holds is waited for (for ever when `lock_timeout` is None).
        """
        topology = self.read().topology
        running = self.guests.running()
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
        if keeper.running(self.run_dir) is None:  # gone (killed), or the lab is older than keepers
            self.guests.keep_consoles(sorted(running & set(topology.hosts)))
        for name in names:
            self.guests.open_host(name, lock_timeout)
        in_parallel([self.hosts[n] for n in names], lambda h: h.console.attach())
        return {n: self.hosts[n] for n in names}

    def reattach(self, name: str) -> Host:
        """Open a host's control console again (after a restore QEMU has a new pty), in a known state."""
        return self.guests.reattach(name)

    @contextmanager
    def lent(self, name: str) -> Iterator[Host]:
        """Let another ikedlab process (an `ikedlab exec`) have this host's control console for a block."""
        host = self.host(name)
        host.console.close()
        try:
            yield host
        finally:
            self.reattach(name)

    # --- changing a running lab ----------------------------------------------------------------------------
    def restore(self) -> None:
        """Put the tunnel back as the plan has it: right peer keys, its iked.conf, iked restarted."""
        plan = self.plan()
        gateways = self.gateways()
        exchange_keys(plan, gateways)
        in_parallel(gateways, lambda h: install_ike_conf(plan, h))
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

    # --- the end -------------------------------------------------------------------------------------------
    def detach(self) -> None:
        """Let go of the consoles (others may take them) but keep owning the lab."""
        self.guests.detach()

    def close(self) -> None:
        self.release()
        self.guests.close()

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
        keeper.stop(self.run_dir)  # it ends by itself as the guests go; this waits until it has
        shutil.rmtree(self.run_dir / "disks", ignore_errors=True)
        self.blueprint_file.unlink(missing_ok=True)
        self._forget_changes()
        shutil.rmtree(self.run_dir / SECRET_DIR, ignore_errors=True)  # the users' own files too
        self.blueprint = None
        if snapshots and snapshot.remove(self.name) and not quiet:
            progress.say(f"lab '{self.name}': warm snapshot removed")
        if not quiet:
            progress.say(
                f"lab '{self.name}': removed {len(removed)} domain{'s' if len(removed) != 1 else ''}"
            )
        return removed


def lab_names() -> list[str]:
    """Labs with a state file or with domains in libvirt."""
    names = {p.parent.name for p in labs_dir().glob(f"*/{recorded.FILE}")}
    try:
        hv = Hypervisor()
        names |= {d.lab for d in hv.domains()}
        hv.close()
    except (HypervisorError, IkedlabError):
        pass
    return sorted(names)
