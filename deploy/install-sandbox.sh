#!/bin/sh
# Installs what the local provider's workload sandbox needs (README "Local provider"):
# bubblewrap (bwrap), passt (pasta), util-linux (setpriv, nsenter) and python3 under /usr for
# the built-in templates. Idempotent and quiet when everything is there; `make install` (and
# so `make up` and `make test`) runs it.
set -eu

missing=""
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
command -v pasta >/dev/null 2>&1 || missing="$missing passt"
{ command -v setpriv && command -v nsenter; } >/dev/null 2>&1 || missing="$missing util-linux"
[ -x /usr/bin/python3 ] || [ -x /usr/local/bin/python3 ] || missing="$missing python3"

if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi

if [ -n "$missing" ]; then
    if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "WARNING: the workload sandbox needs:$missing (Debian/Ubuntu package names)." >&2
        echo "  Install them as root; until then profiles with local_sandbox: auto run tenant" >&2
        echo "  code unsandboxed and strict profiles (staging, prod) refuse to start the agent." >&2
        exit 0
    fi
    echo "installing the workload sandbox:$missing"
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing \
        || { $SUDO apt-get update -q && \
             $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; }
fi

# pasta, running as each workload's own uid, opens /dev/net/tun: Debian's udev makes it 0666;
# a host without udev (containers, minimal VMs) leaves it 0600.
if [ -c /dev/net/tun ] && [ "$SUDO" != none ] && ! [ "$(stat -c %a /dev/net/tun)" = 666 ]; then
    echo "making /dev/net/tun usable by workload uids (0666, as Debian's udev does)"
    $SUDO chmod 0666 /dev/net/tun
fi
