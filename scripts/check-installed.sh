#!/usr/bin/env bash
# ikedlab as a user who installs it gets it: the wheel built from this checkout, installed into a fresh venv
# outside the checkout, used from an empty folder. Says how far it got; exit 0 only when every step passed:
#   wheel built -> venv made, wheel installed -> `pytest --help` lists the plugin's options
#   -> `ikedlab image build --platform linux` (its own cache: a real build from the wheel's recipe)
#   -> `ikedlab up --platform linux` -> `ikedlab status` -> `ikedlab down`
# Boots a lab: run it under the lab slot (`/work/labslot`-style machines) or alone. Part of `make nightly`.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ikedlab-installed.XXXXXX")
NAME=${IKEDLAB_INSTALLED_NAME:-installed}
export IKEDLAB_STATE_DIR="$WORK/state" IKEDLAB_CACHE_DIR="$WORK/cache"  # nothing shared with other labs
IKEDLAB="$WORK/venv/bin/ikedlab"
started=$SECONDS

step="start"
say() { echo "check-installed: $* ($((SECONDS - started)) s)"; }
trap 'say "FAILED while $step"' ERR
cleanup() {
  [ -x "$IKEDLAB" ] && "$IKEDLAB" --name "$NAME" down --snapshots >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step="building the wheel (pip wheel . on a copy of the checkout)"
mkdir "$WORK/src"
cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/lab" "$ROOT/images" "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
(cd "$WORK/src" && "$PYTHON" -m pip wheel -q --no-deps -w "$WORK/dist" .)
say "wheel built: $(basename "$WORK"/dist/ikedlab-*.whl)"

step="making a fresh venv and installing the wheel"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WORK"/dist/ikedlab-*.whl pytest
say "installed into a fresh venv"

mkdir "$WORK/empty"
cd "$WORK/empty"  # nothing of the checkout around: the package must carry what it needs

step="asking pytest --help for the plugin's options"
help=$("$WORK/venv/bin/pytest" --help)
for option in --platform --lab-name; do grep -q -- "$option" <<<"$help"; done
say "pytest --help lists --platform and --lab-name"

step="building the Linux image from the wheel's recipe"
"$IKEDLAB" image build --platform linux
say "image built"

step="bringing the lab up"
"$IKEDLAB" --name "$NAME" up --platform linux
say "lab up"

step="reading its status"
"$IKEDLAB" --name "$NAME" status
step="taking it down"
"$IKEDLAB" --name "$NAME" down --snapshots
say "every step passed"
