#!/usr/bin/env bash
# Starts the services the integration tests need (STYLE §7) and leaves
# them running. Idempotent: run it as often as you like. Runs as root.
#
# Any failure exits non-zero with a message: CI must fail, never skip.
#
#   Docker      the engine (installed and started when missing) and the
#               locally built test image workspace-plugins-test:busybox
#   PostgreSQL  a local cluster on 127.0.0.1:5432 with a role
#               workspace_plugins/workspace_plugins (LOGIN CREATEDB); the
#               tests' default TEST_DATABASE_URL is
#               postgres://workspace_plugins:workspace_plugins@127.0.0.1:5432/postgres
set -euo pipefail

readonly PG_ROLE=workspace_plugins
readonly PG_PASSWORD=workspace_plugins
readonly PG_HOST=127.0.0.1
readonly PG_WAIT_SECONDS=30

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# Runs psql as the postgres superuser over the local socket.
psql_admin() {
    if command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 "$@")
    else
        local args
        printf -v args '%q ' "$@"
        (cd / && su postgres -c "psql -X -v ON_ERROR_STOP=1 $args")
    fi
}

install_postgres() {
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        return
    fi
    log "installing PostgreSQL (apt-get)"
    apt-get update || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql \
        || die "apt-get install postgresql failed"
    command -v pg_ctlcluster >/dev/null 2>&1 \
        || die "pg_ctlcluster still missing after installing postgresql"
}

# Prints "<version> <name> <status>" of the cluster to use: 15/main if it
# exists, else the first `main`, else the first cluster listed.
pick_cluster() {
    pg_lsclusters --no-header | awk '
        { line[NR] = $1 " " $2 " " $4 }
        $1 == "15" && $2 == "main" { best = NR }
        $2 == "main" && !main { main = NR }
        END {
            if (best) print line[best]
            else if (main) print line[main]
            else if (NR) print line[1]
        }'
}

start_postgres() {
    local cluster version name status
    cluster=$(pick_cluster) || die "pg_lsclusters failed"
    if [[ -z "$cluster" ]]; then
        version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null \
            | sort -n | tail -n 1)
        [[ -n "$version" ]] || die "no PostgreSQL server version found under /usr/lib/postgresql"
        log "no cluster found: creating $version/main"
        pg_createcluster "$version" main || die "pg_createcluster $version main failed"
        cluster=$(pick_cluster)
        [[ -n "$cluster" ]] || die "pg_lsclusters shows no cluster after pg_createcluster"
    fi
    read -r version name status <<<"$cluster"
    if [[ "$status" == online* ]]; then
        log "PostgreSQL $version/$name already running"
    else
        log "starting PostgreSQL $version/$name"
        pg_ctlcluster "$version" "$name" start \
            || die "pg_ctlcluster $version $name start failed (see /var/log/postgresql/postgresql-$version-$name.log)"
    fi

    local waited=0
    until pg_isready -q -h "$PG_HOST"; do
        if ((waited >= PG_WAIT_SECONDS)); then
            die "PostgreSQL $version/$name not ready on $PG_HOST after ${PG_WAIT_SECONDS}s (see /var/log/postgresql/postgresql-$version-$name.log)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "PostgreSQL ready on $PG_HOST"
}

ensure_role() {
    local exists
    exists=$(psql_admin -tA -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'") \
        || die "could not query roles as the postgres superuser"
    if [[ "$exists" != 1 ]]; then
        log "creating role $PG_ROLE"
        psql_admin -q -c "CREATE ROLE $PG_ROLE" || die "CREATE ROLE $PG_ROLE failed"
    fi
    # Re-applied every time so a role left in another state is repaired.
    psql_admin -q -c "ALTER ROLE $PG_ROLE WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" \
        || die "ALTER ROLE $PG_ROLE failed"
    PGPASSWORD="$PG_PASSWORD" psql -X -q -h "$PG_HOST" -U "$PG_ROLE" -d postgres \
        -c 'SELECT 1' >/dev/null \
        || die "role $PG_ROLE cannot log in on $PG_HOST with its password (check pg_hba.conf)"
    log "role $PG_ROLE ready (LOGIN CREATEDB)"
}

# The Docker engine and the test image (scripts/docker.sh).
start_docker() {
    bash "$(dirname "${BASH_SOURCE[0]}")/docker.sh" || die "the Docker engine is not available (see scripts/docker.sh)"
}

main() {
    [[ $EUID -eq 0 ]] || die "must run as root (it installs and starts services)"
    install_postgres
    start_postgres
    ensure_role
    start_docker
    log "all services up"
}

main "$@"
