#!/usr/bin/env bash
# The stack a connection's coroutine touches, in the release binary (run by `make test-stack`):
#
#   scripts/localpg.sh start && eval "$(scripts/localpg.sh env)"   # ids 1..ROWS seeded
#   scripts/test-stack.sh
#
# Resident memory per connection is mostly the pages of coroutine stack it touches:
# may maps 64 KiB per coroutine, and each 4 KiB page a connection ever writes stays resident
# while the coroutine (or may's pool, which reuses it) lives. A request that waits for
# PostgreSQL is the deepest path a connection takes; a second page touched there is resident
# for every connection that ever waited (docs/benchmarks.md has the measured peaks). This check
# keeps the routes' database requests within one page.
#
# Each workload runs against its own server started with STACK_DEBUG=1: may fills every stack
# with a sentinel and prints each coroutine's peak use (in words) when it ends. After the
# workload the server is stopped and the peaks of the connection coroutines (the unnamed ones)
# are read: there must be at least MIN_CONNECTIONS of them, and the deepest must be at most the
# workload's limit.
#   lookups: wrk, GET /user/{id} with random ids 1..ROWS (all found: any non-2xx fails), 20
#     connections for 3 s; then 20 rounds of curl, each a connection per request: GET
#     /user/{id}, GET /user?email=E, GET /users, POST /user?email=E with the body in the
#     head's write, DELETE /user?email=E. Limit: one page (STACK_LIMIT_BYTES, 4096).
#   bodies: 20 rounds of two POSTs, one whose body comes after `Expect: 100-continue` (read
#     after the head: the body path) and one chunked. Limit: STACK_BODY_LIMIT_BYTES (4096; it
#     measured 3,992, closer to the page than the lookups, so it has its own knob).
# Frame sizes depend on the compiler: the FAIL line names rustc's version.
# Exits non-zero on failure, printing the peaks (and the server's stderr). Needs: curl, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/test-helpers.sh # free_port, wait_200

BIN=${BIN:-target/release/records-service}
ROWS=${ROWS:-100000}
LIMIT=${STACK_LIMIT_BYTES:-4096}
BODY_LIMIT=${STACK_BODY_LIMIT_BYTES:-4096}
MIN_CONNECTIONS=40
for tool in curl wrk python3; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing"; exit 1; }
done
dir=$(mktemp -d)
pid=
cleanup() {
    local rc=$?
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    if [ "$rc" -ne 0 ] && [ -s "$dir/stderr" ]; then
        echo "server stderr (last lines):"
        tail -n 20 "$dir/stderr"
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

start() {
    PORT=$(free_port)
    : >"$dir/stderr"
    env -u METRICS_ADDR STACK_DEBUG=1 SERVER_HOST=127.0.0.1 SERVER_PORT="$PORT" WORKERS=2 \
        LOG_LEVEL=warn "$BIN" serve >"$dir/stdout" 2>>"$dir/stderr" &
    pid=$!
    wait_200 "http://127.0.0.1:$PORT/readyz" 30 "$pid" ||
        { echo "FAIL: the service did not answer /readyz 200 within 30 s"; exit 1; }
}

url() { echo "http://127.0.0.1:$PORT$1"; }
post() { # email, extra curl arguments...
    local email=$1
    shift
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' "$@" \
        --data '{"text":"stack depth"}' "$(url "/user?email=$email")"
}

# Stops the server and checks the connection coroutines' peaks against $2 bytes.
check() { # workload, limit
    kill -TERM "$pid" 2>/dev/null || { echo "FAIL: $1: the service had exited"; exit 1; }
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "FAIL: $1: the service did not stop"; exit 1; }
        sleep 0.1 # poll interval
    done
    wait "$pid" 2>/dev/null || true
    pid=
    # "coroutine name = None, stack size = N,  used size = W" (words)
    local peaks count deepest
    peaks=$(grep -o 'name = None, stack size = [0-9]*,  used size = [0-9]*' "$dir/stdout" |
        awk '{print $NF * 8}' | sort -n || true)
    count=$(echo "$peaks" | grep -c . || true)
    deepest=$(echo "$peaks" | tail -1)
    echo "$1: $count connection coroutines; peak stack use (bytes), most common:"
    echo "$peaks" | uniq -c | sort -rn | head -4
    if [ "$count" -lt "$MIN_CONNECTIONS" ]; then
        echo "FAIL: $1: only $count connection coroutines reported their stack use (STACK_DEBUG)"
        exit 1
    fi
    if [ "$deepest" -gt "$2" ]; then
        echo "FAIL: $1: a connection's stack reached $deepest bytes, over $2 ($(rustc -V 2>/dev/null || echo 'rustc unknown'))"
        exit 1
    fi
    echo "PASS: $1: the deepest connection stack is $deepest bytes (limit $2)"
}

start
wrk -t1 -c20 -d3s -s benches/random_user.lua "$(url /)" -- "$ROWS" >"$dir/wrk" ||
    { cat "$dir/wrk"; echo "FAIL: wrk failed"; exit 1; }
grep -E "Requests/sec" "$dir/wrk"
if grep -q "Non-2xx" "$dir/wrk"; then
    cat "$dir/wrk"
    echo "FAIL: lookups: wrk got answers other than 2xx (are ids 1..$ROWS seeded?)"
    exit 1
fi
for i in $(seq 20); do
    email="stack-$i@example.com"
    { curl -sf -o /dev/null "$(url "/user/$i")" &&
        post "$email" &&
        curl -sf -o /dev/null "$(url "/user?email=$email")" &&
        curl -sf -o /dev/null "$(url "/users?limit=10&offset=$i")" &&
        curl -sf -o /dev/null -X DELETE "$(url "/user?email=$email")"; } ||
        { echo "FAIL: lookups: request round $i"; exit 1; }
done
check lookups "$LIMIT"

start
for i in $(seq 20); do
    { post "body-$i@example.com" -H 'Expect: 100-continue' &&
        post "body-$i@example.com" -H 'Transfer-Encoding: chunked'; } ||
        { echo "FAIL: bodies: request round $i"; exit 1; }
done
check bodies "$BODY_LIMIT"
