#!/usr/bin/env bash
# The project's own local PostgreSQL: a cluster at .pgdata/ in the repo (git-ignored), on its
# own port, run as an unprivileged user (PostgreSQL refuses to run as root).
#
#   scripts/localpg.sh start   # initdb on first use, then start (idempotent)
#   scripts/localpg.sh stop    # fast shutdown (idempotent)
#   scripts/localpg.sh env     # prints `export POSTGRES_DB_...=...` lines for eval
#
# Port: LOCALPG_PORT (default 55432), written into the cluster's postgresql.conf when it is
# created. Works from any directory (it cds to the repo itself).
#
# Run as root, the server runs as the `postgres` user (created if missing), which must be able
# to enter the data directory. When it cannot reach the repo (a clone under /root, or in a
# `mktemp -d` directory: mode 700), the cluster is created in a new directory
# /var/tmp/records-localpg-<repo name>.XXXXXX owned by postgres, and .pgdata is a symlink to
# it: start, stop and env find it through the link. Nothing else changes (no chmod or ACL on
# your directories). /var/tmp survives reboots; to discard such a cluster:
#   scripts/localpg.sh stop && rm -rf "$(readlink .pgdata)" .pgdata
#
# Server binaries: PG_BINDIR, else `initdb` on PATH, `pg_config --bindir`, the newest of
# /usr/lib/postgresql/*/bin (Debian/Ubuntu), /usr/pgsql-*/bin (RHEL/PGDG),
# /opt/homebrew/opt/postgresql@*/bin and /usr/local/opt/postgresql@*/bin (Homebrew), then
# /opt/homebrew/bin, /usr/local/bin; for an existing cluster, the first of these whose version
# matches it (the same order as tests/support/pg.rs). When none is found: as root with apt-get,
# the postgresql package is installed; otherwise the script says how to install them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
LINK="$ROOT/.pgdata"
PORT="${LOCALPG_PORT:-55432}"
DB="${LOCALPG_DB:-records}"
USER_NAME="records"
PASSWORD="records"

is_root() { [ "$(id -u)" = 0 ]; }

resolve() { realpath "$1" 2>/dev/null || readlink -f "$1" 2>/dev/null || echo "$1"; }

# Candidate bin directories, one a line, most preferred first.
bindir_candidates() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(resolve "$(command -v initdb)")"; fi
  if command -v pg_config >/dev/null 2>&1; then pg_config --bindir 2>/dev/null || true; fi
  # Versioned install directories, newest version first (9.6 is older than 15).
  local d v
  for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin \
      /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin; do
    [ -d "$d" ] || continue
    v=$(basename "$(dirname "$d")"); v=${v#pgsql-}; v=${v#postgresql@}
    case "$v" in [0-9]*) ;; *) continue ;; esac
    printf '%s %s %s\n' "${v%%.*}" "$(case "$v" in *.*) echo "${v#*.}" ;; *) echo 0 ;; esac)" "$d"
  done | sort -k1,1nr -k2,2nr | cut -d' ' -f3-
  echo /opt/homebrew/bin
  echo /usr/local/bin
}

# The first candidate holding initdb; with a version argument (an existing cluster's
# PG_VERSION), the first whose server is that version, if any is.
find_bindir() {
  local want=${1:-} first="" d ver
  while IFS= read -r d; do
    [ -x "$d/initdb" ] || continue
    [ -n "$first" ] || first=$d
    [ -n "$want" ] || break
    ver=$("$d/postgres" --version 2>/dev/null | sed -nE 's/^[^0-9]*([0-9][0-9.]*).*/\1/p')
    case "$ver." in "$want".*) echo "$d"; return 0 ;; esac
  done < <(bindir_candidates)
  [ -n "$first" ] && echo "$first"
}

install_hint() {
  cat >&2 <<'HINT'
localpg: no PostgreSQL server binaries (initdb, postgres, pg_ctl) found. Install them:
  Debian/Ubuntu: apt-get install postgresql
  Fedora/RHEL:   dnf install postgresql-server
  macOS:         brew install postgresql@15
or set PG_BINDIR to the directory that holds initdb.
HINT
}

# The data directory: .pgdata itself, or where the .pgdata symlink points.
data_dir() {
  if [ -L "$LINK" ]; then readlink "$LINK"; else echo "$LINK"; fi
}

ensure_binaries() {
  local want=""
  [ -f "$DATA/PG_VERSION" ] && want=$(cat "$DATA/PG_VERSION")
  if ! BINDIR=$(find_bindir "$want"); then
    if is_root && command -v apt-get >/dev/null 2>&1; then
      echo "localpg: no PostgreSQL server binaries found; installing the postgresql package" >&2
      apt-get update -qq >&2
      apt-get install -y -qq postgresql postgresql-contrib >&2
      BINDIR=$(find_bindir "$want") || { install_hint; exit 1; }
    else
      install_hint
      exit 1
    fi
  fi
}

ensure_postgres_user() {
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
}

# Run a command as the unprivileged owner of the data directory when we are root (from /, so
# that it does not start in a directory it cannot enter).
as_owner() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Can the server's user reach this directory (search every directory on the way)?
reachable() {
  ! is_root || as_owner test -x "$1"
}

# Sets DATA to an empty directory for a new cluster, owned by the server's user: .pgdata in the
# repo when the server's user can reach it, else a new directory in /var/tmp that .pgdata links
# to.
new_data_dir() {
  if [ -L "$LINK" ]; then
    if [ -d "$DATA" ]; then
      # A link from an earlier attempt whose cluster was never made: reuse its target.
      is_root && chown postgres: "$DATA"
      chmod 700 "$DATA"
      return 0
    fi
    rm -f "$LINK" # its target is gone (/var/tmp cleaned)
  fi
  if reachable "$ROOT"; then
    DATA=$LINK
    mkdir -p "$DATA"
    is_root && chown postgres: "$DATA"
    chmod 700 "$DATA"
    return 0
  fi
  # An empty .pgdata left by a failed earlier run goes; anything else there is not ours to move.
  if [ -e "$LINK" ] && ! rmdir "$LINK" 2>/dev/null; then
    echo "localpg: the postgres user cannot enter $ROOT, and $LINK is not empty; move it away" >&2
    exit 1
  fi
  local parent=/var/tmp name
  [ -d "$parent" ] || parent=/tmp
  name=$(basename "$ROOT" | tr -c 'A-Za-z0-9._\n-' '_' | cut -c1-24)
  DATA=$(mktemp -d "$parent/records-localpg-$name.XXXXXX")
  chown postgres: "$DATA"
  chmod 700 "$DATA"
  ln -s "$DATA" "$LINK"
  echo "localpg: the postgres user cannot enter $ROOT; the cluster lives in $DATA" \
    "(.pgdata links to it)" >&2
}

start() {
  is_root && ensure_postgres_user
  DATA=$(data_dir)
  ensure_binaries
  if [ ! -f "$DATA/PG_VERSION" ]; then
    new_data_dir
    echo "localpg: creating cluster in $DATA (port $PORT)" >&2
    pwfile=$(mktemp /tmp/records-localpg-pw.XXXXXX)
    echo "$PASSWORD" >"$pwfile"
    is_root && chown postgres: "$pwfile"
    as_owner "$BINDIR/initdb" -D "$DATA" -U "$USER_NAME" --pwfile="$pwfile" -A scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null || { rm -f "$pwfile"; exit 1; }
    rm -f "$pwfile"
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 200
shared_buffers = 512MB
synchronous_commit = off
CONF
  elif ! reachable "$DATA"; then
    echo "localpg: the postgres user cannot enter $DATA (a directory above it is closed to" \
      "others, e.g. the repo was moved under /root); move the repo back or the cluster out" >&2
    exit 1
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
  DATA=$(data_dir)
  [ -f "$DATA/PG_VERSION" ] || exit 0
  BINDIR=$(find_bindir "$(cat "$DATA/PG_VERSION")") || exit 0
  if as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
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
