#!/usr/bin/env bash
# Prepare a Debian 12 machine to run ikedlab: system packages, and libvirtd/virtlogd running.
# Idempotent: safe to run before every `make lab-up` / `make test`; does nothing that is already done.
set -Eeuo pipefail  # -E: the ERR trap below also fires inside functions (as_root)

PACKAGES=(
  qemu-system-x86 qemu-utils
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  python3-venv python3-dev gcc libc6-dev      # libc6-dev: libc.a, for the image's static helpers (lab/images/programs.py)
  busybox-static kmod cpio openiked tcpdump nftables signify-openbsd
  debian-archive-keyring                       # image variants from other Debian suites (trixie)
  cmake make bison libevent-dev libssl-dev      # `up --iked-source`: OpenIKED portable built on the host
  graphviz  # ikedlab graph: the lab as SVG/PNG
  ruby      # tests/test_vagrantfile.py runs the Vagrantfile's own Ruby (skipped without it)
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Each step names itself, so a failure says which one stopped the setup (not only make's "Error 1").
step="start"
trap 'echo "setup: failed while $step (exit $?)" >&2' ERR

# One dpkg-query for all packages: this runs before every `make lab-up`, whose warm path takes seconds.
# dpkg-query exits 1 when any named package is unknown to dpkg (a bare machine): that is an answer, not an
# error, so its status is ignored and only its lines are read.
step="asking dpkg which packages are installed"
installed=" $( { dpkg-query -W -f='${Package}:${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true; } \
  | sed -n 's/:install ok installed$//p' | tr '\n' ' ') "
missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$installed" == *" $p "* ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  step="updating apt's package lists (apt-get update)"
  as_root apt-get update -qq
  step="installing ${#missing[@]} packages (apt-get install ${missing[*]})"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirtd refuses to start without the user its QEMU driver is configured for.
step="creating the libvirt-qemu user"
if ! getent passwd libvirt-qemu >/dev/null; then
  getent group kvm >/dev/null || as_root groupadd --system kvm
  getent group libvirt-qemu >/dev/null || as_root groupadd --system libvirt-qemu
  as_root useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
    -g libvirt-qemu -G kvm libvirt-qemu
fi
step="making libvirt's directories"
as_root mkdir -p /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt

# /dev/kvm as Debian's udev rule leaves it (root:kvm 0660). On machines without udev it can be root:root
# 0600: libvirt's cached QEMU capabilities then say KVM while its QEMU user cannot open the device, the
# cache is judged stale and QEMU is re-probed on every domain start (tens of seconds each).
step="setting /dev/kvm's group and mode"
if [ -c /dev/kvm ]; then
  if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
    echo "setup: /dev/kvm to root:kvm 0660 (Debian's default), so libvirt's capability cache stays valid"
    getent group kvm >/dev/null || as_root groupadd --system kvm
    as_root chgrp kvm /dev/kvm && as_root chmod 0660 /dev/kvm
  fi
fi

# A root file system without an init of its own (make test-fresh's) gets everything but the daemons.
if [ -n "${IKEDLAB_NO_DAEMONS:-}" ]; then
  echo "setup: IKEDLAB_NO_DAEMONS: virtlogd and libvirtd not started"
  exit 0
fi

step="starting virtlogd and libvirtd"
running() { pgrep -x "$1" >/dev/null 2>&1; }
running virtlogd || { echo "setup: starting virtlogd"; as_root virtlogd -d; }
running libvirtd || { echo "setup: starting libvirtd"; as_root libvirtd -d; }

# Wait (with a deadline) until the daemon answers, rather than guessing how long it takes to start.
for _ in $(seq 1 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then exit 0; fi
  sleep 0.1
done
echo "setup: libvirtd did not answer on qemu:///system within 10s (see /var/log/libvirt/libvirtd.log)" >&2
exit 1
