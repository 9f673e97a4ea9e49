#!/usr/bin/env bash
# Scaling run: GET /user/{id}, ids uniform in 1..ROWS, with WORKERS = 1, 2, 4, 8 on
# one machine that also runs PostgreSQL and the load generator (wrk + benches/random_user.lua).
# Meant for a machine with 16 or more cores; prints a markdown table and writes JSON. With
# XITCA_BIN (the reference built as TechEmpower builds it, benches/compare/xitca), each worker
# count measures ours then xitca-web on the same database, so both curves come from one run.
#
#   BIN=target/release/records-service scripts/bench-scaling.sh
#   XITCA_BIN=benches/compare/xitca/target/release/xitca-records WORKER_LIST="1 2 4 8 16" \
#     scripts/bench-scaling.sh
#
# Knobs: WORKER_LIST ("1 2 4 8"), ROWS (10000000), SECONDS_PER_RUN (15), CONNECTIONS (50),
# WRK_THREADS (4), PG_BINDIR (found under /usr/lib/postgresql), OUT_DIR (bench-results),
# WRK (wrk), PG_LIBS (a directory prepended to LD_LIBRARY_PATH for PostgreSQL and wrk only, for
# binaries carried to a machine without them).
# Starts its own throwaway cluster (as the postgres user when root) and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/records-service}
WORKER_LIST=${WORKER_LIST:-1 2 4 8}
ROWS=${ROWS:-10000000}
SECS=${SECONDS_PER_RUN:-15}
CONNS=${CONNECTIONS:-50}
THREADS=${WRK_THREADS:-4}
OUT_DIR=${OUT_DIR:-bench-results}
PG_BINDIR=${PG_BINDIR:-$(printf '%s\n' /usr/lib/postgresql/*/bin | tail -1)}
mkdir -p "$OUT_DIR"
DATA=$(mktemp -d /tmp/scaling-pg.XXXX)
PORT=${PG_PORT:-55499}
WRK=${WRK:-wrk}
with_libs() { if [ -n "${PG_LIBS:-}" ]; then env LD_LIBRARY_PATH="$PG_LIBS" "$@"; else "$@"; fi; }
PG_USER=postgres
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres 2>/dev/null || PG_USER=nobody
  chown "$PG_USER" "$DATA"
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$PG_USER" -- "$(command -v env)" ${PG_LIBS:+LD_LIBRARY_PATH=$PG_LIBS} "$@"; else with_libs "$@"; fi; }
cleanup() { as_pg "$PG_BINDIR/pg_ctl" -D "$DATA/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$DATA"; }
trap cleanup EXIT
as_pg "$PG_BINDIR/initdb" -D "$DATA/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BINDIR/pg_ctl" -D "$DATA/data" -l "$DATA/pg.log" -w -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c shared_buffers=4GB -c max_connections=200 -c synchronous_commit=off -c fsync=off" start >/dev/null
export POSTGRES_DB_HOST=127.0.0.1 POSTGRES_DB_PORT=$PORT POSTGRES_DB_NAME=postgres POSTGRES_DB_USER=postgres POSTGRES_DB_PASSWORD=
echo "scaling: seeding $ROWS rows" >&2
t0=$(date +%s.%N)
"$BIN" seed --rows "$ROWS" 2>&1 | tail -2 >&2
echo "scaling: seeded in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" >&2
results=()
systems=(ours)
[ -n "${XITCA_BIN:-}" ] && systems+=(xitca)
for w in $WORKER_LIST; do
 for sys in "${systems[@]}"; do
  if [ "$sys" = xitca ]; then
    WORKERS=$w HOST=127.0.0.1 PORT=8099 "$XITCA_BIN" 2>"$OUT_DIR/scaling-$sys-$w.log" &
  else
    WORKERS=$w SERVER_PORT=8099 "$BIN" serve 2>"$OUT_DIR/scaling-server-$w.log" &
  fi
  sp=$!
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:8099/user/1 2>/dev/null && break; sleep 0.1; done
  with_libs "$WRK" -c "$CONNS" -t "$THREADS" -d 3s -s benches/random_user.lua http://127.0.0.1:8099 -- "$ROWS" >/dev/null 2>&1 || true
  line=$(with_libs "$WRK" -c "$CONNS" -t "$THREADS" -d "${SECS}s" --latency -s benches/random_user.lua http://127.0.0.1:8099 -- "$ROWS" 2>/dev/null | grep '^{"tool"')
  rss=$(awk '/VmHWM/ {print $2}' /proc/$sp/status)
  kill "$sp"; wait "$sp" || true
  echo "scaling: $sys WORKERS=$w $line rss_kib=$rss" >&2
  results+=("{\"system\": \"$sys\", \"workers\": $w, \"rss_kib\": $rss, \"wrk\": $line}")
 done
done
(IFS=,; echo "[${results[*]}]") >"$OUT_DIR/scaling.json"
python3 - "$OUT_DIR/scaling.json" "$(nproc)" "$CONNS" "$SECS" "$ROWS" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
print(f"GET /user/{{id}}, ids uniform in 1..{int(sys.argv[5]):,}, {sys.argv[3]} connections, wrk, {sys.argv[4]} s per run; "
      f"{sys.argv[2]} cores shared by PostgreSQL, wrk and the server\n")
print("| system | WORKERS | req/s | req/s per worker | p50 ms | p99 ms | errors | peak RSS MB |")
print("|---|--:|--:|--:|--:|--:|--:|--:|")
for r in runs:
    w = r["wrk"]; rps = w["requests"] / (w["duration_us"] / 1e6)
    errs = sum(w["errors"].values())
    print(f"| {r.get('system', 'ours')} | {r['workers']} | {rps:,.0f} | {rps / r['workers']:,.0f} | {w['latency_us']['p50']/1000:.2f} | "
          f"{w['latency_us']['p99']/1000:.2f} | {errs} | {r['rss_kib']/1024:.1f} |")
PY
