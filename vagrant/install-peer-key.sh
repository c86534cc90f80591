#!/bin/sh
# Runs on a gateway, as root, during the Vagrantfile's key exchange.
#   install-peer-key.sh KEYFILE DEST
# KEYFILE is the peer gateway's public key (its /etc/iked/local.pub, carried over by the host); DEST is
# where iked looks for it: /etc/iked/pubkeys/fqdn/<the peer's srcid>. Prints "changed" when DEST got new
# content (iked must then be restarted to use it) and "unchanged" otherwise. KEYFILE is removed.
set -eu
src=$1
dest=$2
trap 'rm -f "$src"' EXIT

# Refuse anything that is not one PEM public key: an empty or error text here would make iked fail later,
# with a message far from the cause.
if [ "$(grep -c -e '^-----BEGIN PUBLIC KEY-----$' -e '^-----END PUBLIC KEY-----$' "$src")" != 2 ]; then
	echo "install-peer-key: $src is not a PEM public key" >&2
	exit 1
fi

if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
	echo unchanged
	exit 0
fi
mkdir -p "$(dirname "$dest")"
install -m 644 "$src" "$dest"
echo changed
