#!/usr/bin/env bash
# Read throughput with one primary against primary plus one streaming replica, in `make bench`
# terms: GET /user/{id} over ROWS records (ids uniform), wrk with 50 connections, the service with
# WORKERS workers, reads on the primary (target_session_attrs=read-write) and on the standby
# (prefer-standby), alternating, ROUNDS rounds of DURATION seconds, medians and the ratio.
#
#   scripts/bench-replica.sh        # knobs: ROWS (1000000), ROUNDS (3), DURATION (10), WORKERS (2)
#
# Makes its own primary and standby (pg_basebackup) under /var/tmp, run as the postgres user,
# on ports 56101 and 56102, and removes them at the end. On one machine the two servers share
# its cores: the figure shows the cost of the routing, not the scaling (see docs/operations.md, "Scale-out").
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}; ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; WORKERS=${WORKERS:-2}
BINDIR=$(dirname "$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
WORK=$(mktemp -d /var/tmp/records-bench-replica.XXXXXX)
chmod 755 "$WORK"
P1=56101; P2=56102
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
svc=""
cleanup() {
  if [ -n "$svc" ]; then kill "$svc" 2>/dev/null || true; fi
  as_pg "$BINDIR/pg_ctl" -D "$WORK/standby" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$BINDIR/pg_ctl" -D "$WORK/primary" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk >/dev/null; }
cargo build --release --bin records-service >&2

as_pg "$BINDIR/initdb" -D "$WORK/primary" -U postgres -A trust --no-sync >/dev/null
echo "host replication postgres 127.0.0.1/32 trust" >>"$WORK/primary/pg_hba.conf"
pgopts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK -c shared_buffers=256MB -c max_connections=100"
as_pg "$BINDIR/pg_ctl" -D "$WORK/primary" -o "-p $P1 $pgopts" -l "$WORK/primary.log" -w start >/dev/null
PRIMARY="postgres://postgres@127.0.0.1:$P1/postgres?sslmode=disable"
echo "bench-replica: seeding $ROWS rows on the primary" >&2
DATABASE_URL=$PRIMARY target/release/records-service seed --rows "$ROWS" >/dev/null 2>&1
as_pg "$BINDIR/pg_basebackup" -D "$WORK/standby" -h 127.0.0.1 -p "$P1" -U postgres -R -X stream -c fast
as_pg "$BINDIR/pg_ctl" -D "$WORK/standby" -o "-p $P2 $pgopts" -l "$WORK/standby.log" -w start >/dev/null
BOTH="postgres://postgres@127.0.0.1:$P1,127.0.0.1:$P2/postgres?sslmode=disable"

run() { # target_session_attrs -> req/s
  DATABASE_URL="$BOTH&target_session_attrs=$1" WORKERS=$WORKERS SERVER_PORT=18123 \
    target/release/records-service serve 2>/dev/null &
  svc=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18123/readyz >/dev/null && break; sleep 0.1; done
  wrk -t1 -c50 -d3s -s benches/random_user.lua http://127.0.0.1:18123 -- "$ROWS" >/dev/null
  wrk -t1 -c50 -d"${DURATION}s" -s benches/random_user.lua http://127.0.0.1:18123 -- "$ROWS" \
    | awk '/Requests\/sec/ {print int($2)}'
  kill "$svc"; wait "$svc" 2>/dev/null || true; svc=""
}
primary=(); standby=()
for r in $(seq "$ROUNDS"); do
  p=$(run read-write); s=$(run prefer-standby)
  echo "round $r: reads on the primary $p req/s, on the standby $s req/s" >&2
  primary+=("$p"); standby+=("$s")
done
python3 - "${primary[*]}" "${standby[*]}" <<'PY'
import statistics, sys
p = [float(x) for x in sys.argv[1].split()]
s = [float(x) for x in sys.argv[2].split()]
mp, ms = statistics.median(p), statistics.median(s)
print("| reads on | GET /user/{id} req/s (median) | runs |")
print("|---|--:|---|")
print(f"| the primary (read-write) | {mp:,.0f} | {' / '.join(f'{x:,.0f}' for x in p)} |")
print(f"| the standby (prefer-standby) | {ms:,.0f} | {' / '.join(f'{x:,.0f}' for x in s)} |")
print(f"\nratio standby / primary: {ms / mp:.2f}")
PY
