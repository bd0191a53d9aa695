#!/usr/bin/env bash
# `make docker-smoke`: build the image, bring the compose stack up on loopback ports, probe it, tear it down.
#
#   deploy/smoke.sh                run everything (about 15 minutes the first time on 2 shared cores)
#   deploy/smoke.sh STEP...        only these steps, in this order: install dockerd base-images wheelhouse
#                                  build up probe down (dockerd is always started when needed and stopped
#                                  at exit if this script started it)
#
# Offline / air-gapped mode (SMOKE_OFFLINE=1, the default: no image registry is needed):
#   - the base images named by the Dockerfile's and the compose file's FROM / image: lines are built from
#     Debian packages with mmdebstrap (SMOKE_DEBIAN_SOURCES: a sources file or mirror URL; default the host's)
#     and tagged with those names; images already present are kept (SMOKE_REBUILD_BASE=1 rebuilds them);
#   - pip inside the build reads a wheelhouse resolved by the base image's own Python with the host's pip settings
#     (`pip wheel` in a container; build/smoke/pip-cache keeps its downloads), served on 127.0.0.1 by
#     `python3 -m http.server` and passed as build arguments (PIP_NO_INDEX=1, PIP_FIND_LINKS=http://127.0.0.1:PORT/)
#     to a build on the host network;
#   - the CA bundle (SMOKE_PIP_CERT, default the host's pip `cert`) goes in as the build secret `pip_cert`,
#     for a pip index behind TLS with a private CA (unused by the loopback wheelhouse, harmless).
# SMOKE_OFFLINE=0 pulls the real base images and lets pip use its default index.
#
# Installs docker.io, docker-compose and mmdebstrap with apt-get when missing (root). Starts its own dockerd
# (overlay2, no iptables) when none answers, and stops only what it started. Writes build/smoke/report.md.
set -euo pipefail
# Each step runs as `step || failed` (errexit is off inside it): a step returns 1 at its first failing command.

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=${SMOKE_WORK:-$ROOT/build/smoke}
mkdir -p "$WORK"
REPORT=$WORK/report.md
OFFLINE=${SMOKE_OFFLINE:-1}
PROJECT=${SMOKE_PROJECT:-jepa-smoke}
IMAGE=jepa-serve:cpu
PY=${SMOKE_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
# docker.io's client (20.10) speaks to docker.io's engine and builds with BuildKit without a buildx plugin; a newer
# client elsewhere on PATH (Docker 23+) wants the buildx plugin for that. Chosen again after the install step.
pick_docker() { echo "${SMOKE_DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker || echo docker)}"; }
DOCKER=$(pick_docker)
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
STARTED_DOCKERD=""
HTTP_PID=""

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LB_PORT=${SMOKE_LB_PORT:-$(free_port)}
PROM_PORT=${SMOKE_PROMETHEUS_PORT:-$(free_port)}
# short give-up time, so the start-up probe sees a replica exit 75 and come back within the run
export JEPA_PORT="127.0.0.1:$LB_PORT" PROMETHEUS_PORT=$PROM_PORT JEPA_STARTUP_GIVE_UP_S=${JEPA_STARTUP_GIVE_UP_S:-20}
COMPOSE=(docker-compose -p "$PROJECT" -f docker-compose.yml)
# the stack without Grafana (no Debian package, no image offline) and without the load-test profile
SERVICES=(keygen redis api-1 api-2 lb prometheus)

now() { date +%s; }
say() { echo ">> smoke: $*" >&2; }
record() { echo "$*" >>"$REPORT"; }          # a row of the steps table
note() { echo "$*" >>"$WORK/notes.md"; }      # details, printed after the table
timed() {  # timed NAME CMD...: runs CMD, records how long it took
    local name=$1 start rc=0; shift
    start=$(now)
    "$@" || rc=$?
    record "| $name | $(( $(now) - start )) s | $( [ $rc = 0 ] && echo ok || echo "FAILED ($rc)") |"
    return $rc
}

cleanup() {
    local rc=$?
    set +e
    [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null && wait "$HTTP_PID" 2>/dev/null
    if [ -n "$STARTED_DOCKERD" ]; then
        say "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
    fi
    exit $rc
}
trap cleanup EXIT

step_install() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    if [ "$OFFLINE" = 1 ]; then command -v mmdebstrap >/dev/null || missing+=(mmdebstrap); fi
    [ ${#missing[@]} = 0 ] && { say "docker.io, docker-compose, mmdebstrap present"; return 0; }
    say "installing ${missing[*]}"
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || return 1
    DOCKER=$(pick_docker)
}

step_dockerd() {
    if "$DOCKER" info >/dev/null 2>&1; then say "a Docker engine answers; using it"; return 0; fi
    say "starting dockerd (overlay2, no iptables); log: $WORK/dockerd.log"
    dockerd --storage-driver=overlay2 --iptables=false --ip-masq=false >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 1 120); do
        "$DOCKER" info >/dev/null 2>&1 && return 0
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || { tail -20 "$WORK/dockerd.log" >&2; return 1; }
        sleep 0.5
    done
    say "dockerd did not answer in 60 s"; return 1
}

debian_sources() {
    if [ -n "${SMOKE_DEBIAN_SOURCES:-}" ]; then echo "$SMOKE_DEBIAN_SOURCES"
    elif [ -f /etc/apt/sources.list.d/debian.sources ]; then echo /etc/apt/sources.list.d/debian.sources
    else echo "deb http://deb.debian.org/debian bookworm main"; fi
}

# base_image NAME PACKAGES HOOK CHANGES...: a Debian bookworm rootfs with PACKAGES, imported as NAME
base_image() {
    local name=$1 packages=$2 hook=$3; shift 3
    if [ "${SMOKE_REBUILD_BASE:-0}" != 1 ] && "$DOCKER" image inspect "$name" >/dev/null 2>&1; then
        say "base image $name present"; return 0
    fi
    local changes=() c
    for c in "$@"; do changes+=(--change "$c"); done
    say "building base image $name from Debian packages: $packages"
    mmdebstrap --quiet --variant=minbase --include="$packages" --aptopt='APT::Install-Recommends "false"' \
        --customize-hook="$hook" --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        bookworm - "$(debian_sources)" </dev/null | "$DOCKER" import "${changes[@]}" - "$name" >/dev/null
}

step_base_images() {
    [ "$OFFLINE" = 1 ] || { say "online mode: base images are pulled by the build"; return 0; }
    local python_image nginx_image redis_image prometheus_image
    python_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
    nginx_image=$(sed -n 's/^ *image: \(nginx:.*\)/\1/p' docker-compose.yml | sort -u)
    redis_image=$(sed -n 's/^ *image: \(redis:.*\)/\1/p' docker-compose.yml | sort -u)
    prometheus_image=$(sed -n 's/^ *image: \(prom\/prometheus:.*\)/\1/p' docker-compose.yml | sort -u)
    # Debian's python3 is 3.11, as in python:3.11-slim-bookworm; pip may install into it (as in that image).
    base_image "$python_image" python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' 'ENV LANG=C.UTF-8' 'CMD ["python3"]' || return 1
    base_image "$nginx_image" nginx,wget 'true' 'CMD ["nginx", "-g", "daemon off;"]' 'EXPOSE 80' || return 1
    # As the official image: data in /data, protected mode off (other containers connect; the port is not published).
    base_image "$redis_image" redis-server \
        'mkdir -p "$1"/data && printf "%s\n" "#!/bin/sh" "[ \"\$1\" = redis-server ] && { shift; exec redis-server --protected-mode no \"\$@\"; }" "exec \"\$@\"" >"$1"/usr/local/bin/docker-entrypoint.sh && chmod 755 "$1"/usr/local/bin/docker-entrypoint.sh' \
        'WORKDIR /data' 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["redis-server"]' || return 1
    base_image "$prometheus_image" prometheus,wget 'mkdir -p "$1"/prometheus' \
        'ENTRYPOINT ["/usr/bin/prometheus"]' 'WORKDIR /prometheus' || return 1
    note "Base images (mmdebstrap, Debian bookworm, \`$(debian_sources)\`):"
    for image in "$python_image" "$nginx_image" "$redis_image" "$prometheus_image"; do
        note "- \`$image\`: $("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'), created $("$DOCKER" image inspect -f '{{.Created}}' "$image" | cut -c1-16)"
    done
    note ""
}

pip_setting() {  # the host pip's value of one setting (environment first, then its configuration files)
    "$PY" -m pip config list 2>/dev/null | sed -n "s/^\(:env:\|global\)\.$1='\(.*\)'\$/\2/p" | head -1
}

step_wheelhouse() {
    [ "$OFFLINE" = 1 ] || return 0
    # Resolved by the image's own Python (Debian's 3.11.2: environment markers such as python_full_version differ
    # from the host's), with the host's pip settings: index, find-links, constraints and CA bundle, whose local
    # paths are mounted read-only at the same place, on the host network.
    local python_image extras setting value path envs=() mounts=()
    python_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
    rm -rf "$WORK/src"
    mkdir -p "$WORK/src" "$WORK/wheelhouse" "$WORK/pip-cache"
    cp -r pyproject.toml README.md service export models "$WORK/src/" || return 1
    find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
    for setting in index-url extra-index-url find-links constraint cert; do
        value=$(pip_setting "$setting")
        [ -n "$value" ] || continue
        envs+=(-e "PIP_$(echo "$setting" | tr 'a-z-' 'A-Z_')=$value")
        for path in $value; do
            path=${path#file://}
            case $path in /*) ;; *) continue ;; esac
            [[ $path == */simple ]] && path=${path%/simple}  # an index's pages link to ../../files/
            [ -e "$path" ] && mounts+=(-v "$path:$path:ro")
        done
    done
    # the extras the Dockerfile's CPU stages install (export, venv-cpu)
    extras=$(grep -o '"\.\[[a-z,]*\]"' Dockerfile | grep -v gpu | tr -d '".[]' | tr ',' '\n' | sort -u | paste -sd,)
    say "wheelhouse: pip wheel '.[$extras]' inside $python_image with the host's pip settings"
    "$DOCKER" run --rm --network host "${envs[@]}" "${mounts[@]}" -e PIP_DISABLE_PIP_VERSION_CHECK=1 -e PIP_RETRIES=1 \
        -v "$WORK/src:/src" -v "$WORK/wheelhouse:/wheelhouse" -v "$WORK/pip-cache:/root/.cache/pip" \
        "$python_image" pip wheel --quiet --wheel-dir /wheelhouse "/src[$extras]" "setuptools>=68" wheel \
        >"$WORK/wheelhouse.log" 2>&1 || { tail -30 "$WORK/wheelhouse.log" >&2; return 1; }
    note "Wheelhouse: $(ls "$WORK/wheelhouse" | wc -l) wheels, $(du -sh "$WORK/wheelhouse" | cut -f1)."
    note ""
}

WHEEL_PORT=""
serve_wheelhouse() {
    WHEEL_PORT=$(free_port)
    "$PY" -m http.server --bind 127.0.0.1 --directory "$WORK/wheelhouse" "$WHEEL_PORT" >"$WORK/wheelhouse-http.log" 2>&1 &
    HTTP_PID=$!
    for _ in $(seq 1 40); do
        "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$WHEEL_PORT/', timeout=1)" 2>/dev/null && return 0
        sleep 0.25
    done
    say "the wheelhouse server did not answer"; return 1
}

step_build() {
    local args=(--network host --target runtime-cpu -t "$IMAGE")
    local cert=${SMOKE_PIP_CERT:-$(pip_setting cert)}
    [ -n "$cert" ] && [ -f "$cert" ] && args+=(--secret "id=pip_cert,src=$cert")
    if [ "$OFFLINE" = 1 ]; then
        serve_wheelhouse || return 1
        args+=(--build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$WHEEL_PORT/")
    fi
    say "docker build ${args[*]} ."
    "$DOCKER" build --progress=plain "${args[@]}" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; return 1; }
    [ -n "$HTTP_PID" ] && { kill "$HTTP_PID"; wait "$HTTP_PID" 2>/dev/null || true; HTTP_PID=""; }
    note "Image \`$IMAGE\` (\`runtime-cpu\`): $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'),"\
" user $("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE"),"\
" torch importable inside: $("$DOCKER" run --rm --entrypoint python "$IMAGE" -c 'import importlib.util as u; print(u.find_spec("torch") is not None)')."
    note ""
}

step_up() {
    say "docker-compose up (${SERVICES[*]}) on 127.0.0.1:$LB_PORT (lb) and 127.0.0.1:$PROM_PORT (prometheus)"
    "${COMPOSE[@]}" up -d --no-build "${SERVICES[@]}" || return 1
    local deadline=$(( $(now) + 300 ))
    until [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$("${COMPOSE[@]}" ps -q lb)" 2>/dev/null)" = healthy ]; do
        [ "$(now)" -lt $deadline ] || { "${COMPOSE[@]}" ps >&2; "${COMPOSE[@]}" logs --tail 30 >&2; return 1; }
        sleep 1
    done
    "${COMPOSE[@]}" ps >"$WORK/ps.txt"
}

step_probe() {
    local key
    key=$("${COMPOSE[@]}" logs --no-color keygen | sed -n 's/.*API key (shown once, store it now): *//p' | tail -1 | tr -d '\r')
    [ -n "$key" ] || { say "no API key in the keygen log"; return 1; }
    "$PY" "$ROOT/deploy/smoke_probes.py" --lb "http://127.0.0.1:$LB_PORT" --prometheus "http://127.0.0.1:$PROM_PORT" \
        --key "$key" --compose "${COMPOSE[*]}" --docker "$DOCKER" --report "$WORK/probes.md"
}

step_down() {
    "${COMPOSE[@]}" logs --no-color --timestamps >"$WORK/compose.log" 2>&1 || true  # kept for a failed probe
    say "docker-compose down -v (the stack's logs: $WORK/compose.log)"
    "${COMPOSE[@]}" down -v --remove-orphans
}

main() {
    local steps=("$@") started rc=0
    [ ${#steps[@]} -gt 0 ] || steps=(install dockerd base-images wheelhouse build up probe down)
    started=$(now)
    rm -f "$WORK/notes.md" "$WORK/probes.md"
    {
        echo "## Smoke run $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo ""
        echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)."
        echo "Steps: \`deploy/smoke.sh ${steps[*]}\` (offline mode: $OFFLINE)."
        echo ""
        echo "| step | time | result |"
        echo "|---|---|---|"
    } >"$REPORT"
    for step in "${steps[@]}"; do
        [ "$step" = install ] || [ "$step" = dockerd ] || "$DOCKER" info >/dev/null 2>&1 || step_dockerd
        if ! timed "$step" "step_${step//-/_}"; then
            rc=1
            [ "$step" = down ] || { say "step $step failed; tearing down"; step_down >/dev/null 2>&1 || true; }
            break
        fi
    done
    record ""
    if "$DOCKER" info >/dev/null 2>&1; then
        record "Versions: Docker engine $("$DOCKER" version -f '{{.Server.Version}}' 2>/dev/null), docker-compose $(docker-compose version --short 2>/dev/null)."
        record ""
    fi
    [ -f "$WORK/notes.md" ] && cat "$WORK/notes.md" >>"$REPORT"
    [ -f "$WORK/probes.md" ] && { cat "$WORK/probes.md" >>"$REPORT"; record ""; }
    record ""
    record "Total: $(( $(now) - started )) s, $( [ $rc = 0 ] && echo passed || echo FAILED)."
    cat "$REPORT"
    return $rc
}

main "$@"
