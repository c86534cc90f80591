#!/usr/bin/env bash
# `make test-fresh`: the README's first command, `make lab-up PLATFORM=linux`, on a fresh Debian 12 machine.
#
# The machine is a minimal Debian 12 root made from Debian's packages (mmdebstrap --variant=minbase, plus
# make, the one program the README assumes), with the committed tree copied in as a clone would have it. The
# command runs there as root, in a mount namespace of its own, as far as a root file system allows: it has no
# init, so no daemons (IKEDLAB_NO_DAEMONS: setup-host.sh installs and prepares libvirt but starts nothing,
# the machine's own libvirtd is not reachable from the root, and /dev holds no /dev/kvm). It then prints how
# far the command got: packages installed, venv made, appliance image built, and the line it stopped on.
#
# Needs root and Debian's package registry (the mirror of this machine's apt sources). Takes minutes: it is
# in `make nightly`, not `make test`. KEEP=1 keeps the root (its path is printed).
set -Eeuo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE=bookworm
[ "$(id -u)" -eq 0 ] || { echo "test-fresh: needs root (it builds a root file system and chroots into it)" >&2; exit 2; }

step="start"
trap 'echo "test-fresh: failed while $step (exit $?)" >&2' ERR

step="installing mmdebstrap"
command -v mmdebstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
}

# This machine's apt sources (deb822 .sources or one-line lists), for the root's apt too: the mirror this
# machine reaches Debian's package registry through.
step="finding this machine's apt sources"
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || sources=(http://deb.debian.org/debian)

ROOT=$(mktemp -d /var/tmp/ikedlab-fresh-XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] && echo "test-fresh: root kept in $ROOT" || rm -rf --one-file-system "$ROOT"; }
trap cleanup EXIT

started=$SECONDS
step="making a minimal Debian 12 root (apt sources: ${sources[*]})"
echo "test-fresh: a minimal Debian 12 root in $ROOT (apt sources: ${sources[*]})"
mmdebstrap --quiet --variant=minbase --include=make,ca-certificates "$SUITE" "$ROOT/fs" "${sources[@]}" \
  >"$ROOT/mmdebstrap.log" 2>&1
made=$((SECONDS - started))

step="copying the committed tree into the root"
mkdir -p "$ROOT/fs/root/ikedlab"
git -C "$REPO" archive HEAD | tar -x -C "$ROOT/fs/root/ikedlab"
# What this machine's network needs, as its own administrator set it up (not what ikedlab installs): name
# resolution, the local certificate authorities (a TLS-inspecting proxy: without them pip's downloads from
# PyPI fail certificate verification) and pip's configuration.
cp /etc/resolv.conf "$ROOT/fs/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/fs/usr/local/share/ca-certificates/"
  chroot "$ROOT/fs" update-ca-certificates >/dev/null 2>&1
fi
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$ROOT/fs/etc/pip.conf"
# Services a package would start from its maintainer scripts stay down: there is no init in here.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/fs/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/fs/usr/sbin/policy-rc.d"

# The first command, as a new user types it, in a mount namespace of its own (its mounts go with it):
# a fresh /proc, and a /dev of its own with only the plain devices (never the machine's /dev/kvm, which
# setup-host.sh would otherwise re-own).
step="running make lab-up PLATFORM=linux in the root"
echo "test-fresh: make lab-up PLATFORM=linux in the root (output in $ROOT/lab-up.log)"
status=0
unshare --mount --propagation private env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
  IKEDLAB_NO_DAEMONS=1 ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
  bash -c '
    set -e
    root=$1
    mount -t proc proc "$root/proc"
    mount -t tmpfs -o mode=0755,nosuid dev "$root/dev"
    for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
      IFS=: read -r name major minor <<<"$d"
      mknod -m 0666 "$root/dev/$name" c "$major" "$minor"
    done
    mkdir -p "$root/dev/pts" "$root/dev/shm"
    exec chroot "$root" bash -c "cd /root/ikedlab && make lab-up PLATFORM=linux"
  ' fresh "$ROOT/fs" >"$ROOT/lab-up.log" 2>&1 || status=$?
ran=$((SECONDS - started - made))

# How far it got, from what it left in the root.
step="reading how far it got"
have() { chroot "$ROOT/fs" dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c '^install ok installed$' || true; }
packages=$(sed -n '/^PACKAGES=(/,/^)/p' "$REPO/scripts/setup-host.sh" | sed 's/#.*//; s/PACKAGES=(//; s/)//' | tr -s ' \n' '\n' | grep -v '^$')
wanted=$(echo "$packages" | wc -l)
installed=$(have $packages)
venv=no; [ -f "$ROOT/fs/root/ikedlab/.venv/.installed" ] && venv=yes
image=no; [ -f "$ROOT/fs/root/.cache/ikedlab/linux/current/initrd.img" ] && image=yes
# ikedlab's one-line error when it got that far, else the last line setup or make said.
last=$(grep '^ikedlab: ' "$ROOT/lab-up.log" | tail -1 || true)
[ -n "$last" ] || last=$(grep -E '^(setup|make)(: |\[)' "$ROOT/lab-up.log" | tail -1 || true)

echo "test-fresh: how far \`make lab-up PLATFORM=linux\` got in a fresh Debian 12 root:"
echo "  root made (mmdebstrap minbase + make):   yes, ${made} s"
echo "  packages installed (setup-host.sh):      $installed of $wanted"
echo "  venv made (.venv, pip install -e .):     $venv"
echo "  appliance image built (~/.cache/ikedlab): $image"
echo "  make exited $status after ${ran} s; it stopped on: ${last:-(no ikedlab line; see the log)}"
[ "$installed" -eq "$wanted" ] && [ "$venv" = yes ] && [ "$image" = yes ] || {
  echo "test-fresh: the first command did not get as far as a root file system allows (log: $ROOT/lab-up.log)" >&2
  KEEP=1
  exit 1
}
