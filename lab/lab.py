"""A named lab's lifecycle: up, attach, status, down; its state file and run directory.

The run directory holds everything a human may want after a run: console transcripts, serial logs, iked
logs, captures, the rendered configs. `down` finds the lab's domains through libvirt's metadata, so it cleans
up after a half-finished `up` or a lost state file too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab import progress
from lab import topology as topo
from lab.command import run
from lab.console import BOOT, Console, Transcript
from lab.errors import HypervisorError, IkedlabError, ImageError, LabError
from lab.host import Host
from lab.hypervisor import (
    DomainSpec,
    Hypervisor,
    LabDomain,
    Nic,
    check_ports_free,
    detect_accel,
    lab_ports,
    mac_address,
)
from lab.ikedconf import read_user_confs
from lab.images import LinuxImage, OpenBSDImage, cached_openbsd_image, default_cache_dir, linux_image
from lab.platforms import get_platform
from lab.progress import step
from lab.provision import (
    Options,
    exchange_keys,
    in_parallel,
    provision,
    rendered_iked_conf,
    restart_tunnel,
    write_iked_conf,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
DEFAULT_NAME = "default"
MEMORY_MIB = {"linux": 128, "openbsd": 256}


def state_root() -> Path:
    if os.environ.get("IKEDLAB_STATE_DIR"):
        return Path(os.environ["IKEDLAB_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ikedlab"


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


class Lab:
    def __init__(self, name: str = DEFAULT_NAME, run_dir: Path | None = None) -> None:
        if not NAME_RE.match(name):
            raise LabError(f"lab name '{name}': use 1-20 lower-case letters, digits and '-'")
        self.name = name
        self.run_dir = run_dir or state_root() / "labs" / name
        self.state_file = self.run_dir / "state.json"
        self._hypervisor: Hypervisor | None = None
        self.hosts: dict[str, Host] = {}
        self.topology: topo.Topology | None = None
        self.transcript: Transcript | None = None
        self.options = Options()

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
            raise LabError(f"lab '{self.name}' is not up", "start it with `ikedlab up`") from None
        except (ValueError, TypeError) as e:
            raise LabError(
                f"{self.state_file}: unreadable state ({e})", "`ikedlab down` cleans it up"
            ) from None

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            known = ", ".join(self.hosts) or "none"
            raise LabError(f"no host '{name}' in lab '{self.name}' (hosts: {known})")
        return self.hosts[name]

    # --- up ------------------------------------------------------------------------------------------------
    def up(
        self,
        topology_path: Path | None = None,
        platform: str = "openbsd",
        options: Options | None = None,
        keep_on_failure: bool = False,
        openbsd_release: str | None = None,
        iked_conf_files: dict[str, Path] | None = None,
    ) -> None:
        """Boot the lab and provision it up to an established tunnel.

        Everything that reaches a guest is checked first: the topology, the platforms, and each user's
        iked.conf (`iked_conf_files`, host -> file) by the host's iked; nothing is created before.
        """
        options = options or Options()
        topology = topo.load(topology_path)
        platforms = {h.name: h.platform or platform for h in topology.hosts.values()}
        for name in set(platforms.values()):
            get_platform(name)
        if iked_conf_files:
            texts = read_user_confs(iked_conf_files, [g.name for g in topology.gateways], topology.path.name)
            options = dataclasses.replace(
                options,
                iked_conf={**options.iked_conf, **texts},
                iked_conf_sources={h: str(p) for h, p in iked_conf_files.items()},
            )
        boot_media = self._boot_media(
            platforms, openbsd_release
        )  # fails before anything is created when an image is missing
        hv = self.hypervisor
        if hv.domains(self.name):
            raise LabError(f"lab '{self.name}' is already up", "`ikedlab down` first, or pick another --name")
        wires = self._wires(topology)
        check_ports_free([p for ends in wires.values() for _, p in ends], self.name)

        accel = detect_accel(boot_media.linux.kernel if boot_media.linux else None, default_cache_dir())
        progress.say(
            f"  accelerator: {'KVM' if accel.kind == 'kvm' else 'software emulation (TCG)'} — {accel.reason}"
        )
        self._reset_run_dir()
        options = dataclasses.replace(options, platforms=platforms)
        state = LabState(
            self.name,
            str(topology.path.resolve()),
            platforms,
            accel.kind,
            list(options.peer_any),
            time.time(),
            dict(options.iked_conf),
        )
        self.options = options
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        try:
            self._boot(topology, platforms, accel.kind, boot_media, wires)
            self.topology = topology
            self._save_rendered_configs(topology, options)
            provision(topology, self.hosts, options)
        except BaseException:
            if not keep_on_failure:
                self.down(quiet=True)
            raise

    def _boot_media(self, platforms: dict[str, str], openbsd_release: str | None) -> BootMedia:
        return BootMedia(
            linux=linux_image() if "linux" in platforms.values() else None,
            openbsd=_openbsd_image(openbsd_release) if "openbsd" in platforms.values() else None,
        )

    def _wires(self, topology: topo.Topology) -> dict[str, list[tuple[str, int]]]:
        """Each link's two ends as (host, local UDP port); the other end's port is the remote one."""
        ports = iter(lab_ports(self.name))
        wires = {}
        for link in topology.links.values():
            wires[link.name] = [(host, next(ports)) for host in link.ends]
        return wires

    def _reset_run_dir(self) -> None:
        for sub in ("console", "serial", "disks", "configs"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _boot(
        self,
        topology: topo.Topology,
        platforms: dict[str, str],
        accel: str,
        media: BootMedia,
        wires: dict[str, list[tuple[str, int]]],
    ) -> None:
        hv = self.hypervisor
        with step(f"boot: {len(topology.hosts)} guests created, consoles attached"):
            specs = []
            for host in topology.hosts.values():
                nics = []
                for iface in host.interfaces:
                    ends = wires[iface.link]
                    local = next(p for h, p in ends if h == host.name)
                    remote = next(p for h, p in ends if h != host.name)
                    nics.append(Nic(mac_address(self.name, host.name, iface.index), local, remote))
                spec = self._domain_spec(host.name, platforms[host.name], accel, media, tuple(nics))
                hv.create(spec, paused=True)
                specs.append(spec)
            self.transcript = Transcript(self.run_dir / "console")
            consoles = {s.host: self._console(s.host, s.name, platforms[s.host]) for s in specs}
            for spec in specs:
                hv.resume(spec.name)
        self.hosts = {
            name: Host(
                topology.host(name), get_platform(platforms[name]), console, self.run_dir / "artifacts"
            )
            for name, console in consoles.items()
        }
        with step("boot: every guest at a shell"):
            in_parallel(self.hosts.values(), self._wait_booted)

    def _wait_booted(self, host: Host) -> None:
        host.console.wait_for(host.platform.login.ready, BOOT, "boot to the console (ready banner or login)")
        host.console.attach()

    def _domain_spec(
        self, host: str, platform: str, accel: str, media: BootMedia, nics: tuple[Nic, ...]
    ) -> DomainSpec:
        spec = DomainSpec(
            lab=self.name,
            host=host,
            platform=platform,
            accel=accel,
            nics=nics,
            serial_log=self.run_dir / "serial" / f"{host}.log",
            memory_mib=MEMORY_MIB.get(platform, 256),
        )
        if platform == "linux":
            assert media.linux
            image = media.linux
            return dataclasses.replace(
                spec,
                kernel=image.kernel,
                initrd=image.initrd,
                cmdline=f"{image.cmdline} ikedlab.hostname={host}",
            )
        assert media.openbsd
        # Each guest writes to its own throw-away overlay; the golden image is never changed.
        overlay = self.run_dir / "disks" / f"{host}.qcow2"
        overlay.parent.mkdir(parents=True, exist_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", media.openbsd.path, overlay])
        return dataclasses.replace(spec, disk=overlay)

    def _console(self, host: str, domain: str, platform: str) -> Console:
        facts = get_platform(platform).login
        return Console(
            host,
            self.hypervisor.console_argv(domain),
            transcript=self.transcript,
            raw_log=self.run_dir / "console" / f"{host}.raw",
            user=facts.user,
            password=facts.password,
            password_prompt=facts.password_prompt,
        )

    def _save_rendered_configs(self, topology: topo.Topology, options: Options) -> None:
        configs = self.run_dir / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        for gateway in topology.gateways:
            (configs / f"{gateway.name}.iked.conf").write_text(
                rendered_iked_conf(topology, gateway.name, options)
            )

    # --- attach to a running lab ---------------------------------------------------------------------------
    def attach(self, only: list[str] | None = None) -> dict[str, Host]:
        """Consoles on a lab that is up (started by another process); each put in a known state."""
        state = self.state()
        topology = topo.load(state.topology)
        self.topology = topology
        self.options = Options(
            peer_any=tuple(state.peer_any), iked_conf=state.iked_conf, platforms=state.platforms
        )
        running = {d.host for d in self.hypervisor.domains(self.name) if d.running}
        names = only or list(topology.hosts)
        for name in names:
            if name not in topology.hosts:
                raise LabError(f"no host '{name}' in lab '{self.name}' (hosts: {', '.join(topology.hosts)})")
            if name not in running:
                raise LabError(
                    f"host '{name}' of lab '{self.name}' is not running", "`ikedlab status` shows the lab"
                )
        self.transcript = self.transcript or Transcript(self.run_dir / "console")
        for name in names:
            if name in self.hosts:
                continue
            console = self._console(name, f"ikedlab-{self.name}-{name}", state.platforms[name])
            self.hosts[name] = Host(
                topology.host(name), get_platform(state.platforms[name]), console, self.run_dir / "artifacts"
            )
        in_parallel([self.hosts[n] for n in names], lambda h: h.console.attach())
        return {n: self.hosts[n] for n in names}

    def gateways(self) -> list[Host]:
        assert self.topology, "the lab is neither up nor attached"
        return [self.hosts[g.name] for g in self.topology.gateways]

    def restore(self) -> None:
        """Put the tunnel back as `up` made it: right peer keys, rendered iked.conf, iked restarted."""
        topology = self.topology
        assert topology, "the lab is neither up nor attached"
        gateways = self.gateways()
        exchange_keys(topology, gateways)
        in_parallel(
            gateways, lambda h: write_iked_conf(h, rendered_iked_conf(topology, h.name, self.options))
        )
        restart_tunnel(gateways)

    def close(self) -> None:
        for host in self.hosts.values():
            host.console.close()
        self.hosts.clear()
        if self.transcript:
            self.transcript.close()
        if self._hypervisor:
            self._hypervisor.close()
            self._hypervisor = None

    # --- status and down -----------------------------------------------------------------------------------
    def domains(self) -> list[LabDomain]:
        return self.hypervisor.domains(self.name)

    def down(self, quiet: bool = False) -> list[str]:
        """Remove every domain of this lab and its disks; keep transcripts and captures for humans."""
        for host in self.hosts.values():
            host.console.close()
        self.hosts.clear()
        removed = self.hypervisor.destroy_lab(self.name)
        shutil.rmtree(self.run_dir / "disks", ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        if not quiet:
            progress.say(
                f"lab '{self.name}': removed {len(removed)} domain{'s' if len(removed) != 1 else ''}"
            )
        return removed


@dataclass(frozen=True)
class BootMedia:
    """The golden images a lab boots from, one per platform it uses."""

    linux: LinuxImage | None = None
    openbsd: OpenBSDImage | None = None


def _openbsd_image(release: str | None) -> OpenBSDImage:
    """The cached golden image of `release` (the newest cached release when None)."""
    image = cached_openbsd_image(release)
    if image is None:
        pinned = f" --release {release}" if release else ""
        raise ImageError(
            f"no OpenBSD {release + ' ' if release else ''}image in the cache",
            f"build one with `ikedlab image build --platform openbsd{pinned}`"
            " (needs the internet or --iso PATH), "
            "or use --platform linux (make lab-up PLATFORM=linux)",
        )
    return image


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
