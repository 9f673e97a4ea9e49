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
# more than needed. This check keeps the usual requests within one page.
#
# Each workload runs against its own server started with STACK_DEBUG=1: may fills every stack
# with a sentinel and prints each coroutine's peak use (in words) when it ends. After the
# workload the server is stopped and the peaks of the connection coroutines (the unnamed ones)
# are read: there must be at least 20, and the deepest must be at most the workload's limit.
#   lookups: wrk, GET /user/{id} with random ids 1..ROWS, 20 connections for 3 s, then 20
#     connections each sending a GET /user/{id} and a POST /user?email=E whose body is in the
#     head's write (curl). Limit: one page (LIMIT, 4096 bytes).
#   bodies: 20 connections each sending a POST whose body comes after `Expect: 100-continue`
#     (read after the head: the body path) and a chunked one (curl). Limit: BODY_LIMIT (4096
#     bytes, measured 3,992: closer to the page than the lookups, so it has its own knob).
# Exits non-zero on failure, printing the peaks. Needs: curl, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/records-service}
ROWS=${ROWS:-100000}
LIMIT=${STACK_LIMIT_BYTES:-4096}
BODY_LIMIT=${STACK_BODY_LIMIT_BYTES:-4096}
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

start() {
    PORT=$((20000 + RANDOM % 20000))
    STACK_DEBUG=1 SERVER_HOST=127.0.0.1 SERVER_PORT=$PORT WORKERS=2 LOG_LEVEL=warn \
        "$BIN" serve >"$dir/stdout" 2>"$dir/stderr" &
    pid=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return
        kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr"; echo "FAIL: the service exited"; exit 1; }
        sleep 0.05
    done
    echo "FAIL: not ready"
    exit 1
}

post() { # email, extra curl arguments...
    local email=$1
    shift
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' "$@" \
        --data '{"text":"stack depth"}' "http://127.0.0.1:$PORT/user?email=$email"
}

# Stops the server and checks the connection coroutines' peaks against $2 bytes.
check() { # workload, limit
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
    # "coroutine name = None, stack size = N,  used size = W" (words)
    local peaks count deepest
    peaks=$(grep -o 'name = None, stack size = [0-9]*,  used size = [0-9]*' "$dir/stdout" |
        awk '{print $NF * 8}' | sort -n)
    count=$(echo "$peaks" | grep -c . || true)
    deepest=$(echo "$peaks" | tail -1)
    echo "$1: $count connection coroutines; peak stack use (bytes), most common:"
    echo "$peaks" | uniq -c | sort -rn | head -4
    if [ "$count" -lt 20 ]; then
        echo "FAIL: $1: only $count connection coroutines reported their stack use"
        exit 1
    fi
    if [ "$deepest" -gt "$2" ]; then
        echo "FAIL: $1: a connection's stack reached $deepest bytes, over $2"
        exit 1
    fi
    echo "PASS: $1: the deepest connection stack is $deepest bytes (limit $2)"
}

start
BENCH_ROWS=$ROWS wrk -t1 -c20 -d3s -s benches/random_user.lua "http://127.0.0.1:$PORT" |
    grep -E "Requests/sec|Non-2xx" || true
for i in $(seq 20); do
    { curl -sf -o /dev/null "http://127.0.0.1:$PORT/user/$i" && post "stack-$i@example.com"; } ||
        { echo "FAIL: lookup $i"; exit 1; }
done
check lookups "$LIMIT"

start
for i in $(seq 20); do
    { post "body-$i@example.com" -H 'Expect: 100-continue' &&
        post "body-$i@example.com" -H 'Transfer-Encoding: chunked'; } ||
        { echo "FAIL: body $i"; exit 1; }
done
check bodies "$BODY_LIMIT"
