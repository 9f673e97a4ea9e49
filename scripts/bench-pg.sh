#!/usr/bin/env bash
# The PostgreSQL client's benchmark: lookups/s through our pipelined client alone
# (examples/pg_lookups.rs) against pgbench -M prepared with a 32-deep \startpipeline script,
# both on 2 connections, and the same client over TLS, with statements prepared in each
# transaction (what a transaction pooler needs), and through PgBouncer in session and transaction pooling mode.
# Alternating, ROUNDS rounds of DURATION seconds each, medians and ratios against plain.
#
#   scripts/bench-pg.sh            # needs the local database seeded to ROWS (make seed ROWS=...)
# Knobs: ROUNDS (3), DURATION (10 seconds per run; not SECONDS, which bash owns), ROWS (10000000), CONNECTIONS (2), DEPTH (32), CALLERS (256),
#        VARIANTS (default: all of "plain tls per-transaction bouncer-session bouncer-transaction")
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; SECONDS_PER_RUN=${DURATION:-10}; ROWS=${ROWS:-10000000}
CONNECTIONS=${CONNECTIONS:-2}; DEPTH=${DEPTH:-32}; CALLERS=${CALLERS:-256}
VARIANTS=${VARIANTS:-plain tls per-transaction bouncer-session bouncer-transaction}
if [ -z "${POSTGRES_DB_HOST:-}" ]; then
  scripts/localpg.sh start
  eval "$(scripts/localpg.sh env)"
fi
cargo build --release --example pg_lookups >&2
BINDIR=$(dirname "$(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | tail -1)")
PGBENCH=$(command -v pgbench || echo "$BINDIR/pgbench")
export PGPASSWORD=$POSTGRES_DB_PASSWORD
# shellcheck disable=SC2153 # POSTGRES_DB_PORT is the caller's, or localpg.sh env's (above)
psql_do() { "$BINDIR/psql" -h "$POSTGRES_DB_HOST" -p "$POSTGRES_DB_PORT" -U "$POSTGRES_DB_USER" \
  -d "$POSTGRES_DB_NAME" -tAc "$1"; }
work=$(mktemp -d)
chmod 755 "$work"
bouncer_pid=""
cleanup() { [ -n "$bouncer_pid" ] && kill "$bouncer_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# TLS needs the server's ssl on: a self-signed certificate in the data directory, turned on
# with a reload (the script's own local server only).
if [[ " $VARIANTS " == *" tls "* ]] && [ "$(psql_do 'SHOW ssl')" != on ]; then
  data=$(psql_do 'SHOW data_directory')
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=localhost \
    -keyout "$data/server.key" -out "$data/server.crt" 2>/dev/null
  chmod 600 "$data/server.key"
  [ "$(id -u)" = 0 ] && chown postgres: "$data/server.key" "$data/server.crt"
  psql_do "ALTER SYSTEM SET ssl = on" >/dev/null
  psql_do "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 50); do [ "$(psql_do 'SHOW ssl')" = on ] && break; sleep 0.1; done
fi

# PgBouncer (Debian's), one per pooling mode, run as the unprivileged user.
start_bouncer() { # mode port
  local dir="$work/bouncer-$1"
  mkdir -p "$dir"
  printf '"%s" "%s"\n' "$POSTGRES_DB_USER" "$POSTGRES_DB_PASSWORD" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=$POSTGRES_DB_HOST port=$POSTGRES_DB_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = $1
default_pool_size = $CONNECTIONS
max_client_conn = 100
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- /usr/sbin/pgbouncer -q "$dir/pgbouncer.ini" &
  else /usr/sbin/pgbouncer -q "$dir/pgbouncer.ini" & fi
  bouncer_pid=$!
  for _ in $(seq 100); do
    "$BINDIR/psql" -h 127.0.0.1 -p "$2" -U "$POSTGRES_DB_USER" -d "$POSTGRES_DB_NAME" -tAc 'SELECT 1' \
      >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "PgBouncer ($1) did not start" >&2; cat "$dir/pgbouncer.log" >&2; exit 1
}
stop_bouncer() { kill "$bouncer_pid"; wait "$bouncer_pid" 2>/dev/null || true; bouncer_pid=""; }

script="$work/pipeline.sql"
{
  printf '%s\n' '\startpipeline'
  for i in $(seq 1 "$DEPTH"); do
    echo "\\set id$i random(1, $ROWS)"
    echo "SELECT id, email::text, text::text FROM records WHERE id = :id$i;"
  done
  printf '%s\n' '\endpipeline'
} >"$script"

ours() { # extra environment for the example
  env "$@" WORKERS="$CONNECTIONS" CALLERS="$CALLERS" SECONDS="$SECONDS_PER_RUN" ROWS="$ROWS" \
    target/release/examples/pg_lookups | awk '{print $2}'
}

# Warm the cache (a freshly started server reads the table from disk at first).
ours PGSSLMODE=disable >/dev/null
declare -A results
for r in $(seq 1 "$ROUNDS"); do
  t=$("$PGBENCH" -h "$POSTGRES_DB_HOST" -p "$POSTGRES_DB_PORT" -U "$POSTGRES_DB_USER" -n -M prepared \
      -c "$CONNECTIONS" -j "$CONNECTIONS" -T "$SECONDS_PER_RUN" -f "$script" "$POSTGRES_DB_NAME" \
      2>/dev/null | awk '/^tps/ {print $3}')
  results[pgbench]+="$(python3 -c "print(round($t * $DEPTH))") "
  for v in $VARIANTS; do
    case $v in
      plain) n=$(ours PGSSLMODE=disable) ;;
      tls) n=$(ours PGSSLMODE=require) ;;
      per-transaction) n=$(ours PGSSLMODE=disable PG_STATEMENT_MODE=transaction) ;;
      bouncer-session)
        start_bouncer session 56432
        n=$(ours PGSSLMODE=disable POSTGRES_DB_PORT=56432); stop_bouncer ;;
      bouncer-transaction)
        start_bouncer transaction 56433
        n=$(ours PGSSLMODE=disable POSTGRES_DB_PORT=56433 PG_STATEMENT_MODE=transaction); stop_bouncer ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    results[$v]+="$n "
  done
  echo "round $r: $(for v in pgbench $VARIANTS; do printf '%s %s ' "$v" "$(echo "${results[$v]}" | awk '{print $NF}')"; done)" >&2
done
args=("pgbench=${results[pgbench]}")
for v in $VARIANTS; do args+=("$v=${results[$v]}"); done
python3 - "$CONNECTIONS" "$DEPTH" "${args[@]}" <<'PY'
import statistics, sys
conns, depth = sys.argv[1], sys.argv[2]
runs = {k: [float(x) for x in v.split()] for k, v in (a.split("=", 1) for a in sys.argv[3:])}
labels = {
    "pgbench": f"pgbench -M prepared, {depth}-deep pipeline, {conns} connections",
    "plain": f"records-service pg client, {conns} connections",
    "tls": "the same over TLS (sslmode=require, TLS 1.3, AES-GCM)",
    "per-transaction": "the same, statements prepared in each transaction (PG_STATEMENT_MODE=transaction)",
    "bouncer-session": "through PgBouncer 1.18, session pooling",
    "bouncer-transaction": "through PgBouncer 1.18, transaction pooling, statements prepared per transaction",
}
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"| client | lookups/s (median of {len(runs['pgbench'])}) | runs | / plain |")
print("|---|--:|---|--:|")
for k, v in runs.items():
    ratio = f"{med[k] / med['plain']:.2f}" if "plain" in med else ""
    print(f"| {labels[k]} | {med[k]:,.0f} | {' / '.join(f'{x:,.0f}' for x in v)} | {ratio} |")
if "plain" in med:
    print(f"\nratio plain / pgbench: {med['plain'] / med['pgbench']:.2f}")
PY
