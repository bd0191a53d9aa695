#!/usr/bin/env bash
# Installs wrk (the C load generator of `make bench-host`) from Debian's package if it is missing; quick when
# present, never fatal: without it the bench skips its HTTP rows and its smoke test says why.
set -uo pipefail
note() { echo ">> bench-host tools: $*"; }
command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    note "wrk missing and apt-get unavailable (not root or not Debian): the HTTP rows will be skipped"
    exit 0
fi
candidate() { [[ $(apt-cache policy wrk 2>/dev/null) == *"Candidate: "[0-9]* ]]; }
candidate || apt-get update -qq >/dev/null 2>&1
if candidate && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; then
    note "wrk installed ($(wrk -v 2>&1 | head -1 | cut -d' ' -f2))"
else
    note "wrk could not be installed: the HTTP rows will be skipped"
fi
exit 0
