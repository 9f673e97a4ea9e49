#!/usr/bin/env bash
# The HTTP-core comparison: our HTTP/1.1 loop against may_minihttp 0.1.11, no database.
# Two example binaries answer GET /json with {"message":"Hello, World!"}:
#
#   target/release/examples/hello_core       ours            127.0.0.1:8101
#   benches/compare/minihttp/target/release/hello_minihttp
#                                            may_minihttp    127.0.0.1:8102
#     (a standalone project: may_minihttp brings may's default features, work stealing included,
#     which records-service's own builds leave out)
#
# Each is measured with wrk, alternating, ROUNDS rounds of HTTP_SECONDS, in two modes:
#   keepalive    wrk -c 64 -t 2 (one request in flight per connection)
#   pipeline16   the same with benches/pipeline.lua sending 16 requests per write
# Output: bench-results/http-core.md (medians and the ratio ours / may_minihttp, also printed),
# bench-results/http-core.json, raw wrk results under bench-results/http-raw/.
#
#   scripts/bench-http.sh                # builds hello_core (cargo build --release --examples) and
#                                        # the may_minihttp reference
#   ROUNDS=5 HTTP_SECONDS=10 scripts/bench-http.sh
#
# Knobs: ROUNDS (3), HTTP_SECONDS (10), HTTP_CONNECTIONS (64), HTTP_THREADS (2), PIPELINE_DEPTH (16),
# WARMUP_SECONDS (2), BENCH_OUT (bench-results), WORKERS (passed to both servers when set),
# HTTP_NO_BUILD=1 (use the binaries as they are), HTTP_BIN_DIR (target/release/examples: hello_core's directory).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
HTTP_SECONDS=${HTTP_SECONDS:-10}
HTTP_CONNECTIONS=${HTTP_CONNECTIONS:-64}
HTTP_THREADS=${HTTP_THREADS:-2}
PIPELINE_DEPTH=${PIPELINE_DEPTH:-16}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
OUT_DIR=${BENCH_OUT:-bench-results}
BIN_DIR=${HTTP_BIN_DIR:-target/release/examples}
MINIHTTP_DIR=benches/compare/minihttp

log() { echo "bench-http: $*" >&2; }
die() { echo "bench-http: error: $*" >&2; exit 1; }

for v in ROUNDS HTTP_SECONDS HTTP_CONNECTIONS HTTP_THREADS PIPELINE_DEPTH WARMUP_SECONDS; do
  { [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ]; } || die "$v must be a positive integer (got '${!v}')"
done

. scripts/lib/bench-servers.sh

if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (apt-get)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq wrk >/dev/null; } \
    || die "wrk could not be installed"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (benches/report.py)"

if [ "${HTTP_NO_BUILD:-0}" != 1 ]; then
  log "building the examples (cargo build --release --examples)"
  nice -n 10 cargo build --release --examples -j "${BENCH_BUILD_JOBS:-2}" >&2
  log "building the may_minihttp reference ($MINIHTTP_DIR)"
  (cd "$MINIHTTP_DIR" && nice -n 10 cargo build --release -j "${BENCH_BUILD_JOBS:-2}") >&2
fi
bin_of() { case $1 in hello_core) echo "$BIN_DIR/hello_core" ;; hello_minihttp) echo "$MINIHTTP_DIR/target/release/hello_minihttp" ;; esac; }
for b in hello_core hello_minihttp; do
  [ -x "$(bin_of "$b")" ] || die "missing $(bin_of "$b") (run without HTTP_NO_BUILD=1 to build it)"
done

port_of() { case $1 in hello_core) echo 8101 ;; hello_minihttp) echo 8102 ;; esac; }

mkdir -p "$OUT_DIR"
rm -rf "$OUT_DIR/http-raw" "$OUT_DIR/http-runs.jsonl"
mkdir -p "$OUT_DIR/http-raw"

start_server() { # name port
  local name=$1 port=$2 logf="$OUT_DIR/http-raw/$1.log" body
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null; then
    die "port $port is already in use"
  fi
  # Both examples read PORT (and WORKERS when set); they bind 127.0.0.1.
  PORT=$port SERVER_HOST=127.0.0.1 SERVER_PORT=$port "$(bin_of "$name")" >>"$logf" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 200); do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited at start"; }
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/json" 2>/dev/null || true)
    if [ -n "$body" ]; then
      [ "$body" = '{"message":"Hello, World!"}' ] || die "$name answered GET /json with '$body'"
      return 0
    fi
    sleep 0.1
  done
  die "$name did not answer on 127.0.0.1:$port within 20 s (log: $logf)"
}

run_wrk() { # port secs depth out
  timeout --foreground $(($2 + 30)) wrk -c "$HTTP_CONNECTIONS" -t "$HTTP_THREADS" -d "${2}s" --latency \
    -s benches/pipeline.lua "http://127.0.0.1:$1/json" -- "$3" >"$4" 2>&1 &
  LOAD_PID=$!
  wait "$LOAD_PID" || die "wrk failed or ran past $(($2 + 30)) s (see $4)"
  LOAD_PID=""
}

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
cat >"$OUT_DIR/http-meta.json" <<EOF
{"machine": "${CPU:-unknown CPU}, $(nproc) CPUs, Linux $(uname -r); server and wrk on the same machine",
 "rounds": $ROUNDS, "seconds": $HTTP_SECONDS, "connections": $HTTP_CONNECTIONS,
 "threads": $HTTP_THREADS, "pipeline_depth": $PIPELINE_DEPTH, "workers": "${WORKERS:-default}",
 "tool": "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"}
EOF

SERVERS=(hello_core hello_minihttp)
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in keepalive pipeline16; do
    depth=1; [ "$mode" = pipeline16 ] && depth=$PIPELINE_DEPTH
    for ((i = 0; i < 2; i++)); do
      name=${SERVERS[$(((i + r - 1) % 2))]}   # alternate which server goes first
      port=$(port_of "$name")
      log "round $r/$ROUNDS, $mode: $name"
      start_server "$name" "$port"
      run_wrk "$port" "$WARMUP_SECONDS" "$depth" "$OUT_DIR/http-raw/$name-$mode-r$r-warmup.txt"
      out="http-raw/$name-$mode-r$r.txt"
      run_wrk "$port" "$HTTP_SECONDS" "$depth" "$OUT_DIR/$out"
      kill -0 "$SERVER_PID" 2>/dev/null || die "$name died during the run"
      stop_server
      printf '{"server":"%s","mode":"%s","round":%d,"depth":%d,"file":"%s"}\n' \
        "$name" "$mode" "$r" "$depth" "$out" >>"$OUT_DIR/http-runs.jsonl"
      sleep 1
    done
  done
done

python3 benches/report.py http-report "$OUT_DIR"
