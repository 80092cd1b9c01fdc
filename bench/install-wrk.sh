#!/bin/sh
# Installs wrk (Debian's package), the HTTP load generator of bench/bench_api_load.py.
# Idempotent and quiet when it is there; `make bench` runs it. Without it (not root, no
# apt-get, no package) the benchmark says so and falls back to Python client processes.
set -u
command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "NOTE: wrk is not installed (apt-get install wrk); bench_api_load falls back to" \
         "Python client processes, which load the machine more." >&2
    exit 0
fi
echo "installing wrk (HTTP load generator for bench_api_load)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk \
    || { $SUDO apt-get update -q && \
         $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; } \
    || echo "NOTE: wrk could not be installed; bench_api_load falls back to Python clients." >&2
exit 0
