#!/usr/bin/env bash
# Issue 4's benchmark: lookups/s through our pipelined client alone (examples/pg_lookups.rs)
# against pgbench -M prepared with a 32-deep \startpipeline script, both on 2 connections,
# alternating, ROUNDS rounds of SECONDS each, medians and the ratio.
#
#   scripts/bench-pg.sh            # needs the local database seeded to ROWS (make seed ROWS=...)
# Knobs: ROUNDS (3), SECONDS (10), ROWS (10000000), CONNECTIONS (2), DEPTH (32), CALLERS (256)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; SECONDS_PER_RUN=${SECONDS:-10}; ROWS=${ROWS:-10000000}
CONNECTIONS=${CONNECTIONS:-2}; DEPTH=${DEPTH:-32}; CALLERS=${CALLERS:-256}
if [ -z "${POSTGRES_DB_HOST:-}" ]; then
  scripts/localpg.sh start
  eval "$(scripts/localpg.sh env)"
fi
cargo build --release --example pg_lookups >&2
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
script=$(mktemp --suffix=.sql)
trap 'rm -f "$script"' EXIT
{
  echo '\startpipeline'
  for i in $(seq 1 "$DEPTH"); do
    echo "\\set id$i random(1, $ROWS)"
    echo "SELECT id, email::text, text::text FROM records WHERE id = :id$i;"
  done
  echo '\endpipeline'
} >"$script"
ours=(); theirs=()
for r in $(seq 1 "$ROUNDS"); do
  t=$(PGPASSWORD=$POSTGRES_DB_PASSWORD "$PGBENCH" -h "$POSTGRES_DB_HOST" -p "$POSTGRES_DB_PORT" \
      -U "$POSTGRES_DB_USER" -n -M prepared -c "$CONNECTIONS" -j "$CONNECTIONS" -T "$SECONDS_PER_RUN" \
      -f "$script" "$POSTGRES_DB_NAME" 2>/dev/null | awk '/^tps/ {print $3}')
  p=$(python3 -c "print(round($t * $DEPTH))")
  o=$(WORKERS=$CONNECTIONS CALLERS=$CALLERS SECONDS=$SECONDS_PER_RUN ROWS=$ROWS \
      target/release/examples/pg_lookups | awk '{print $2}')
  echo "round $r: pgbench ${p} lookups/s, ours ${o} lookups/s" >&2
  theirs+=("$p"); ours+=("$o")
done
python3 - "${ours[*]}" "${theirs[*]}" "$CONNECTIONS" "$DEPTH" <<'PY'
import statistics, sys
ours = [float(x) for x in sys.argv[1].split()]
theirs = [float(x) for x in sys.argv[2].split()]
mo, mt = statistics.median(ours), statistics.median(theirs)
print(f"| client | lookups/s (median of {len(ours)}) | runs |")
print("|---|--:|---|")
print(f"| pgbench -M prepared, {sys.argv[4]}-deep pipeline, {sys.argv[3]} connections | {mt:,.0f} | {', '.join(f'{x:,.0f}' for x in theirs)} |")
print(f"| records-service pg client, {sys.argv[3]} connections | {mo:,.0f} | {', '.join(f'{x:,.0f}' for x in ours)} |")
print(f"\nratio ours / pgbench: {mo / mt:.2f}")
PY
