"""A lab's guests as ikedlab reaches them: libvirt domains, created paused, and ikedlab's control console on
each (a `Host`: console + platform).

The one place a control console is opened (`console`): a cold boot, an attach, and a restore that gives a
guest a new pty all come here, and guests are resumed only once their consoles listen, so nothing a guest
prints is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lab import delivery, keeper, progress, settings
from lab.channel_lock import ChannelLock
from lab.console import Console, Transcript
from lab.errors import LabError
from lab.host import Host
from lab.hypervisor import (
    CONSOLE_CONNECTED,
    CONTROL_DEVICE,
    FILES_CHANNEL,
    SLOW_START_SECONDS,
    DomainSpec,
    Hypervisor,
    domain_name,
    slow_start_reason,
)
from lab.parallel import in_parallel
from lab.platforms import Platform
from lab.progress import step
from lab.topology import Topology


class Guests:
    """The guests of lab `name`, whose run folder is `run_dir`: their domains (through one Hypervisor,
    opened on first use) and a Host per guest whose console is open (`hosts`). `topology` and `platforms`
    say who each guest is; set once the lab's description is known (by `up` or `attach`)."""

    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir
        self.hosts: dict[str, Host] = {}
        self.transcript: Transcript | None = None
        self.topology: Topology | None = None
        self.platforms: dict[str, Platform] = {}
        self._hypervisor: Hypervisor | None = None

    @property
    def hypervisor(self) -> Hypervisor:
        if self._hypervisor is None:
            self._hypervisor = Hypervisor()
        return self._hypervisor

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            known = ", ".join(self.hosts) or "none"
            raise LabError(f"no host '{name}' in lab '{self.name}' (hosts: {known})")
        return self.hosts[name]

    def running(self) -> set[str]:
        """The hosts whose domain runs."""
        return {d.host for d in self.hypervisor.domains(self.name) if d.running}

    # --- boot -------------------------------------------------------------------------------------------
    def boot(self, specs: list[DomainSpec]) -> None:
        """Create every domain paused, open its console, resume them all, wait for every shell."""
        hv = self.hypervisor
        with step(f"boot: {len(specs)} guests created, consoles attached"):
            told_slow = False
            for spec in specs:
                seconds = hv.create(spec, paused=True)
                if seconds > SLOW_START_SECONDS and not told_slow:
                    progress.say(f"  {slow_start_reason(seconds)}")
                    told_slow = True
            self.start_consoles([s.host for s in specs])
        with step("boot: every guest at a shell"):
            in_parallel(self.hosts.values(), self._wait_booted)

    def start_consoles(self, hosts: list[str], opened: bool = False) -> None:
        """Control consoles on paused guests, then every guest resumed: nothing a guest prints is lost.
        The one way guests start talking, for a cold boot and a restore alike (`opened`: the restore opened
        each console as soon as its guest was back)."""
        if not opened:
            for name in hosts:
                self.open_control_console(name)
        for name in hosts:
            self.hypervisor.resume(domain_name(self.name, name))
        self.keep_consoles(hosts)

    def keep_consoles(self, hosts: list[str]) -> None:
        """Hold these guests' control consoles and files channels open for as long as their QEMUs live
        (lab/keeper.py): then an attach from any process is one round trip, `exec` talks to the pty without
        virsh, and a delivery's first bytes are read at once."""
        ptys, files = {}, {}
        for name in hosts:
            found = self.hypervisor.ptys(domain_name(self.name, name))
            if CONTROL_DEVICE in found:
                ptys[name] = found[CONTROL_DEVICE]
            if FILES_CHANNEL in found:
                files[name] = found[FILES_CHANNEL]
        logins = {
            name: keeper.Login(p.login.user, p.login.password, p.login.password_prompt)
            for name, p in self.platforms.items()
        }
        keeper.start(self.run_dir, ptys, logins, also=files)

    def deliver(self, host: Host, files: Mapping[str, Path]) -> None:
        """Put `files` (path in the guest -> file here) into a running guest through its files channel."""
        pty = self.hypervisor.ptys(domain_name(self.name, host.name)).get(FILES_CHANNEL)
        if pty is None:  # on a remote libvirt host: its ptys are that host's
            delivery.deliver_by_console(host, files)
        else:
            delivery.deliver(host, pty, files)

    def _wait_booted(self, host: Host) -> None:
        ready = host.platform.login.ready
        host.console.wait_for(ready, settings.BOOT, "boot to the console (ready banner or login)")
        host.console.attach()

    # --- consoles ---------------------------------------------------------------------------------------
    def open_control_console(self, name: str) -> None:
        """A new control console on a (paused) guest; a restored QEMU has new ptys: the same Host gets it."""
        assert self.topology
        self.transcript = self.transcript or Transcript(self.run_dir / "console")
        platform = self.platforms[name]
        console = self.console(name, platform)
        if name in self.hosts:
            self.hosts[name].console = console
        else:
            self.hosts[name] = Host(self.topology.host(name), platform, console, self.run_dir / "artifacts")

    def open_host(self, name: str, lock_timeout: float | None) -> Host:
        """The Host of a running guest, its console opened (not yet attached) unless it is open already."""
        assert self.topology
        if name not in self.hosts:
            self.transcript = self.transcript or Transcript(self.run_dir / "console")
            platform = self.platforms[name]
            console = self.console(name, platform, lock_timeout)
            self.hosts[name] = Host(self.topology.host(name), platform, console, self.run_dir / "artifacts")
        return self.hosts[name]

    def console(
        self,
        host: str,
        platform: Platform,
        lock_timeout: float | None = None,
        lock: ChannelLock | None = None,
    ) -> Console:
        """ikedlab's control console on one guest (its second serial port), not yet logged in.

        The host's channel lock is taken first, so two ikedlab processes wait for each other instead of
        taking the line from one another.
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
        host.console = self.console(name, host.platform, lock=lock)
        host.console.attach()
        return host

    # --- the end ----------------------------------------------------------------------------------------
    def remove(self) -> None:
        """Every domain of the lab gone; the consoles on them closed first."""
        for host in self.hosts.values():
            host.console.close()
        self.hypervisor.destroy_lab(self.name)

    def detach(self) -> None:
        """Let go of the consoles (others may take them)."""
        for host in self.hosts.values():
            host.console.close()
        self.hosts.clear()

    def close(self) -> None:
        self.detach()
        if self.transcript:
            self.transcript.close()
        if self._hypervisor:
            self._hypervisor.close()
            self._hypervisor = None
