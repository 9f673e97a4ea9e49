#!/usr/bin/env bash
# The API contract, checked by an outside tool (run by `make contract` and `.ci/run`):
# schemathesis generates requests from /openapi.json, valid and invalid ones, sends them to the
# real service, and checks every answer against the document (status codes, content types,
# bodies, headers) and that invalid input is refused. The document and the server cannot drift
# apart without this failing.
#
#   scripts/localpg.sh start && eval "$(scripts/localpg.sh env)"
#   scripts/contract.sh                      # BIN=target/debug/records-service for a debug build
#
# It runs against a database of its own, CONTRACT_DB (default: POSTGRES_DB_NAME + _contract,
# dropped and created again with psql each run; 1,000 seeded rows): on a table of millions, a schema-valid
# offset of 10^12 walks the whole index past the statement timeout and answers 503, which says
# nothing about the contract.
#
# Generation is schemathesis's default: every Unicode string, NUL included, and every check
# (--checks all). The document states what the service refuses: PostgreSQL text cannot hold NUL,
# so every string the service stores or compares (the emails, `after`, the body's `text`) has a
# `pattern` that excludes U+0000, and the service answers 400 for it.
#
# Knobs: SEED (20261128), MAX_EXAMPLES (60 per operation), MAX_TIME (240 s in all).
# schemathesis is installed into .venv/contract (pinned) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/records-service}
SEED=${SEED:-20261128}
MAX_EXAMPLES=${MAX_EXAMPLES:-60}
MAX_TIME=${MAX_TIME:-240}
SCHEMATHESIS_VERSION=4.32.5
VENV=.venv/contract

log() { echo "contract: $*" >&2; }
[ -x "$BIN" ] || { log "no $BIN: build it first (make build)"; exit 1; }
: "${POSTGRES_DB_HOST:?export the database settings first: eval \"\$(scripts/localpg.sh env)\"}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The contract's own database.
CONTRACT_DB=${CONTRACT_DB:-${POSTGRES_DB_NAME}_contract}
# The newest server's psql when none is on PATH (the pattern itself when there is none: not -x).
psql_bin=$(command -v psql || printf '%s\n' /usr/lib/postgresql/*/bin/psql | tail -1)
if [ -x "$psql_bin" ]; then
  export PGPASSWORD=${POSTGRES_DB_PASSWORD:-}
  pg=("$psql_bin" -h "$POSTGRES_DB_HOST" -p "${POSTGRES_DB_PORT:-5432}" -U "$POSTGRES_DB_USER" -d postgres -tAq)
  # Fresh every run: the generated requests write records, and the next run must start from
  # the same table to be reproducible.
  { "${pg[@]}" -c "drop database if exists \"$CONTRACT_DB\" with (force)" &&
    "${pg[@]}" -c "create database \"$CONTRACT_DB\""; } ||
    { log "cannot create database $CONTRACT_DB"; exit 1; }
else
  # Never against the real database: the generated requests write and delete records.
  log "no psql to create $CONTRACT_DB with (install the PostgreSQL client); not running"
  exit 1
fi
export POSTGRES_DB_NAME=$CONTRACT_DB

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; } || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$BIN" seed --rows 1000 --if-empty >"$tmp/seed.log" 2>&1 || { log "seeding $CONTRACT_DB failed:"; cat "$tmp/seed.log" >&2; exit 1; }
SERVER_HOST=127.0.0.1 SERVER_PORT=$port WORKERS=2 LOG_LEVEL=warn "$BIN" serve 2>"$tmp/service.log" &
pid=$!
for _ in $(seq 300); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" && break
  kill -0 "$pid" 2>/dev/null || { log "the service exited:"; cat "$tmp/service.log" >&2; exit 1; }
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$port/readyz" || { log "the service did not become ready"; exit 1; }

log "schemathesis $SCHEMATHESIS_VERSION against http://127.0.0.1:$port/openapi.json (seed $SEED)"
status=0
"$VENV/bin/python" scripts/schemathesis-run.py run "http://127.0.0.1:$port/openapi.json" \
  --checks all --seed "$SEED" --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" \
  --generation-deterministic \
  --workers 2 --request-timeout 10 \
  || status=$?
if [ "$status" -ne 0 ]; then
  log "FAIL (schemathesis exit $status); the service's last log lines:"
  tail -20 "$tmp/service.log" >&2
  exit "$status"
fi
log "PASS"
