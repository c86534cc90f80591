"""ikedlab's timeouts, defaults and environment variables, in one place.

Every environment variable has exactly one reader here; callers ask for the parsed value when they need it (so
a test's or a subprocess's environment is honoured), never read os.environ themselves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lab.errors import SettingsError

# --- timeouts (seconds) -------------------------------------------------------------------------------------
BOOT = 300.0  # a guest from power-on to its login prompt or ready banner (software emulation is slow)
LOGIN = 60.0  # a console from a login prompt to a root shell
COMMAND = 60.0  # one console command, unless its caller knows better
RESUMED_SYNC = 10.0  # a restored guest's shell answering its first sync line (else the full login dialogue)
PING_SLACK = 30.0  # on top of ping's own count x per-reply wait: the console round trip, a busy guest
CAPTURE = 15.0  # tcpdump to start listening (its pcap appears) or to stop
# The active side's iked started (the passive one is past its start-up: IKED_START) to an ESTABLISHED IKE SA
# with child SAs on both gateways: the active iked's own start-up and one exchange. Seen 20-34 s with a load
# average of 13-14 on the 2 cores (resp's signature step slowest); the rest is margin for a busier machine.
SA_TIMEOUT = 90.0
# iked started to its IKE process answering (past start-up; see Host.wait_ike_started): 5-11 s seen under
# load; 35-80 s at every start while the kernel still ran modprobe for each algorithm it lacks as iked
# registers with PF_KEY (now off on gateways: lab/platforms/linux.py, kernel_ipsec_actions).
IKED_START = 120.0
RECOVERY = 120.0  # a tunnel back by itself after a peer lost it: a liveness check, retransmits, new exchange
STATUS_ANSWER = 15.0  # `ikedlab status`: a console (or its lock) silent this long is "no answer" (or "busy")
EXEC = 3600.0  # `ikedlab exec`: it streams and passes Ctrl-C, so a long command is the user's call

# --- defaults -----------------------------------------------------------------------------------------------
OPENBSD_RELEASE = "7.9"  # the release `ikedlab image build` installs when none is asked for
PLATFORM = "openbsd"  # `ikedlab up` / `ikedlab render`: the guide's own platform
SCENARIO_PLATFORM = "linux"  # scenarios and bench: the platform that boots on this machine
IMAGE_PLATFORM = "linux"  # `ikedlab image build`
LAB_NAME = "default"
# Warm snapshots kept on disk, all labs together: 424 MiB per snapshot of the guide's five guests (measured),
# two per lab (its booted base and its provisioned snapshot), so seven labs.
SNAPSHOT_BUDGET = 6 * 2**30
UNLIMITED = -1  # a budget that never evicts


# --- environment --------------------------------------------------------------------------------------------
def lab_name() -> str:
    """IKEDLAB_NAME: the lab commands act on when --name is not given."""
    return os.environ.get("IKEDLAB_NAME") or LAB_NAME


def platform(default: str = PLATFORM) -> str:
    """IKEDLAB_PLATFORM: the platform of hosts whose topology names none."""
    return os.environ.get("IKEDLAB_PLATFORM") or default


def forced_accel() -> str | None:
    """IKEDLAB_ACCEL=kvm|tcg (qemu is tcg's libvirt name): skip KVM detection. None when unset."""
    value = os.environ.get("IKEDLAB_ACCEL", "").strip().lower()
    if not value:
        return None
    if value not in ("kvm", "tcg", "qemu"):
        raise SettingsError(f"IKEDLAB_ACCEL={value}: expected kvm or tcg")
    return "kvm" if value == "kvm" else "tcg"


def libvirt_uri() -> str:
    """IKEDLAB_LIBVIRT_URI: the libvirt connection (qemu:///system unless told)."""
    return os.environ.get("IKEDLAB_LIBVIRT_URI") or "qemu:///system"


def hosts_file() -> Path | None:
    """IKEDLAB_HOSTS: a file of libvirt hosts that `pytest -n N scenarios` spreads its labs over
    (lab/libvirt_hosts.py)."""
    value = os.environ.get("IKEDLAB_HOSTS")
    return Path(value) if value else None


def show_secrets() -> bool:
    """IKEDLAB_SHOW_SECRETS=1 (`ikedlab --show-secrets`): evidence keeps SA keys and PSKs in clear."""
    return os.environ.get("IKEDLAB_SHOW_SECRETS", "") not in ("", "0")


def state_dir() -> Path:
    """IKEDLAB_STATE_DIR, else $XDG_STATE_HOME/ikedlab: labs' state files and run directories."""
    if explicit := os.environ.get("IKEDLAB_STATE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ikedlab"


def labs_dir() -> Path:
    """Every lab's run directory lives here, under its name: state file, transcripts, locks, captures."""
    return state_dir() / "labs"


def qemu_dir() -> Path:
    """IKEDLAB_QEMU_DIR, else /var/lib/ikedlab: what QEMU opens by name when it runs as libvirt's user."""
    return Path(os.environ.get("IKEDLAB_QEMU_DIR") or "/var/lib/ikedlab")


def state_dir_origin() -> str:
    """Where state_dir() came from, for a message about it."""
    if os.environ.get("IKEDLAB_STATE_DIR"):
        return "IKEDLAB_STATE_DIR"
    return "XDG_STATE_HOME" if os.environ.get("XDG_STATE_HOME") else "HOME"


def cache_dir_origin() -> str:
    """Where cache_dir() came from, for a message about it."""
    if os.environ.get("IKEDLAB_CACHE_DIR"):
        return "IKEDLAB_CACHE_DIR"
    return "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "HOME"


def snapshot_budget() -> int:
    """IKEDLAB_SNAPSHOT_BUDGET: bytes of warm snapshots kept, all labs together (`4G`, `900M`, `2GiB`, bytes;
    `unlimited`); least recently used lab out first (lab/budget.py)."""
    value = os.environ.get("IKEDLAB_SNAPSHOT_BUDGET", "").strip()
    if not value:
        return SNAPSHOT_BUDGET
    if value.lower() in ("unlimited", "none"):
        return UNLIMITED
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", value, re.IGNORECASE)
    if not match:
        raise SettingsError(
            f"IKEDLAB_SNAPSHOT_BUDGET={value}: expected a size such as 4G, 900M or 2GiB, or unlimited"
        )
    number, unit = match.groups()
    return int(float(number) * 1024 ** "_KMGT".index(unit.upper() or "_"))


def cache_dir() -> Path:
    """IKEDLAB_CACHE_DIR, else $XDG_CACHE_HOME/ikedlab: images and downloads, shared by every lab."""
    if explicit := os.environ.get("IKEDLAB_CACHE_DIR"):
        return Path(explicit)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "ikedlab"
    return Path.home() / ".cache" / "ikedlab"
