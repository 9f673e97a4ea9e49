#!/usr/bin/env bash
# The project's own local PostgreSQL: a data directory under the repo (.pgdata/, git-ignored),
# on its own port, run as an unprivileged user (PostgreSQL refuses to run as root).
#
#   scripts/localpg.sh start   # initdb on first use, then start (idempotent)
#   scripts/localpg.sh stop    # fast shutdown (idempotent)
#   scripts/localpg.sh env     # prints `export POSTGRES_DB_...=...` lines for eval
#
# Port: LOCALPG_PORT (default 55432). Installs the postgresql package with apt-get when no
# server binaries are found.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA="$ROOT/.pgdata"
PORT="${LOCALPG_PORT:-55432}"
DB="${LOCALPG_DB:-records}"
USER_NAME="records"
PASSWORD="records"

find_bindir() {
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

ensure_binaries() {
  if ! BINDIR=$(find_bindir); then
    echo "localpg: no PostgreSQL server binaries found; installing the postgresql package" >&2
    apt-get update -qq >&2
    apt-get install -y -qq postgresql postgresql-contrib >&2
    BINDIR=$(find_bindir)
  fi
}

# Run a command as the unprivileged owner of the data directory when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  ensure_binaries
  if [ ! -f "$DATA/PG_VERSION" ]; then
    echo "localpg: creating cluster in $DATA (port $PORT)" >&2
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres; chown postgres: "$DATA"; }
    chmod 700 "$DATA"
    pwfile=$(mktemp); echo "$PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
    as_owner "$BINDIR/initdb" -D "$DATA" -U "$USER_NAME" --pwfile="$pwfile" -A scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 200
shared_buffers = 512MB
synchronous_commit = off
CONF
  fi
  if as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    echo "localpg: already running on port $PORT" >&2
  else
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >/dev/null
    echo "localpg: started on port $PORT (log: $DATA/server.log)" >&2
  fi
  if ! PGPASSWORD=$PASSWORD "$BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -tAc \
      "select 1 from pg_database where datname = '$DB'" | grep -q 1; then
    PGPASSWORD=$PASSWORD "$BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -qc "create database $DB" >&2
  fi
}

stop() {
  BINDIR=$(find_bindir) || exit 0
  if [ -f "$DATA/PG_VERSION" ] && as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    echo "localpg: stopped" >&2
  fi
}

env_lines() {
  cat <<ENV
export POSTGRES_DB_HOST=127.0.0.1
export POSTGRES_DB_PORT=$PORT
export POSTGRES_DB_NAME=$DB
export POSTGRES_DB_USER=$USER_NAME
export POSTGRES_DB_PASSWORD=$PASSWORD
ENV
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
