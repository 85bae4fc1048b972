#!/usr/bin/env bash
# Makes sure the Docker engine the adapter tests need is up, then builds
# the test image (scripts/test-image.sh). Idempotent: an engine that
# already answers is left alone (never restarted: other tests share it).
# Otherwise installs docker.io when dockerd is missing, starts dockerd in
# the background (log: /tmp/dockerd.log) and waits for it. Runs as root
# when it has to install or start anything.
#
# Any failure exits non-zero with a message: CI must fail, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly DOCKER_WAIT_SECONDS=60
readonly DOCKERD_LOG=/tmp/dockerd.log

log() { printf 'docker.sh: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

engine_answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

install_docker() {
    if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
        return
    fi
    log "installing docker.io (apt-get)"
    apt-get update || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io \
        || die "apt-get install docker.io failed"
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
}

start_docker() {
    if engine_answers; then
        log "Docker engine already running"
        return
    fi
    if [[ -n "${DOCKER_HOST:-}" ]]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine, or unset DOCKER_HOST to use a local one"
    fi
    [[ $EUID -eq 0 ]] || die "the Docker engine is not running and starting it needs root"
    install_docker
    if command -v pgrep >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1; then
        log "dockerd is running but not answering yet; waiting"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        nohup dockerd >>"$DOCKERD_LOG" 2>&1 &
    fi
    local waited=0
    until engine_answers; do
        if ((waited >= DOCKER_WAIT_SECONDS)); then
            die "the Docker engine did not answer within ${DOCKER_WAIT_SECONDS}s (see $DOCKERD_LOG)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "Docker engine ready"
}

main() {
    start_docker
    bash scripts/test-image.sh || die "building the test image failed (scripts/test-image.sh)"
    log "test image ready"
}

main "$@"
