#!/usr/bin/env bash
# The stack a connection's coroutine touches, in the release binary (run by `make test-stack`):
#
#   scripts/localpg.sh start && eval "$(scripts/localpg.sh env)"   # ids 1..100000 seeded
#   scripts/test-stack.sh
#
# Resident memory per connection is mostly the pages of coroutine stack it touches (issue 14):
# may maps 64 KiB per coroutine, and each 4 KiB page a connection ever writes stays resident
# while the coroutine (or may's pool, which reuses it) lives. A request that waits for
# PostgreSQL is the deepest path a connection takes; it used to reach 4.4-5.2 KB, one page
# more than needed. This check keeps it within one page.
#
# 1. starts the service with STACK_DEBUG=1: may fills every stack with a sentinel and prints
#    each coroutine's peak use (in words) when it ends;
# 2. wrk: GET /user/{id}, random ids 1..ROWS, 20 connections for 3 s; then 20 connections
#    each sending one GET /user/{id} and one POST /user?email=E (curl);
# 3. stops the service and reads the peaks of the connection coroutines (the unnamed ones):
#    there must be at least 20 of them, and the deepest must be at most LIMIT (4096) bytes.
# Exits non-zero on failure, printing the peaks. Needs: curl, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/records-service}
ROWS=${ROWS:-100000}
LIMIT=${STACK_LIMIT_BYTES:-4096}
PORT=${STACK_PORT:-$((20000 + RANDOM % 20000))}
dir=$(mktemp -d)
out="$dir/stdout"
STACK_DEBUG=1 SERVER_HOST=127.0.0.1 SERVER_PORT=$PORT WORKERS=2 LOG_LEVEL=warn \
    "$BIN" serve >"$out" 2>"$dir/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr"; echo "FAIL: the service exited"; exit 1; }
    sleep 0.05
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "FAIL: not ready"; exit 1; }

BENCH_ROWS=$ROWS wrk -t1 -c20 -d3s -s benches/random_user.lua "http://127.0.0.1:$PORT" |
    grep -E "Requests/sec|Non-2xx" || true
for i in $(seq 20); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/user/$i" --next \
        -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
        --data '{"text":"stack depth"}' \
        "http://127.0.0.1:$PORT/user?email=stack-$i@example.com" || { echo "FAIL: request $i"; exit 1; }
done
kill -TERM "$pid"
wait "$pid" || true

# "coroutine name = None, stack size = N,  used size = W" (words)
peaks=$(grep -o 'name = None, stack size = [0-9]*,  used size = [0-9]*' "$out" |
    awk '{print $NF * 8}' | sort -n)
count=$(echo "$peaks" | grep -c . || true)
deepest=$(echo "$peaks" | tail -1)
echo "connection coroutines: $count; peak stack use (bytes), most common:"
echo "$peaks" | uniq -c | sort -rn | head -5
if [ "$count" -lt 20 ]; then
    echo "FAIL: only $count connection coroutines reported their stack use (STACK_DEBUG)"
    exit 1
fi
if [ "$deepest" -gt "$LIMIT" ]; then
    echo "FAIL: a connection's stack reached $deepest bytes, over $LIMIT (one page)"
    exit 1
fi
echo "PASS: the deepest connection stack is $deepest bytes (limit $LIMIT)"
