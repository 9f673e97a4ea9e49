#!/usr/bin/env bash
# The headline benchmark: GET /user/{id}, ids uniform in 1..BENCH_ROWS, over a table of
# BENCH_ROWS records, BENCH_CONNECTIONS keep-alive connections, every system started and measured
# by this one script, alternating, ROUNDS rounds:
#
#   ours      records-service, WORKERS = nproc                      127.0.0.1:8001
#   ours-1    records-service, WORKERS = 1                          127.0.0.1:8011
#   axum      benches/compare/axum (axum 0.8 + tokio-postgres)      127.0.0.1:8002
#   fastapi   benches/compare/fastapi (the original's stack)        127.0.0.1:8003
#   xitca     benches/compare/xitca (xitca-web + xitca-postgres,    127.0.0.1:8004
#             built as TechEmpower's frameworks/Rust/xitca-web: io_uring,
#             pool of one pipelined connection per worker, mimalloc), WORKERS = nproc
#
# and, named in SYSTEMS only (what observability costs; `make bench-observability`):
#   ours-nometrics  records-service, WORKERS = nproc, METRICS=off       127.0.0.1:8021
#   ours-access     records-service, WORKERS = nproc, ACCESS_LOG=all    127.0.0.1:8022
#   ours-base       BASE_BIN (another build, e.g. the previous commit), WORKERS = nproc  :8023
# and (what the xitca reference's build choices are worth; benches/README.md):
#   xitca-epoll     benches/compare/xitca, XITCA_IO_URING=0 (HTTP socket on epoll)  127.0.0.1:8014
#   xitca-plain     benches/compare/xitca-plain, the reference before issue 23       127.0.0.1:8024
#   e.g. SYSTEMS=ours,xitca,xitca-epoll,xitca-plain scripts/bench.sh
# and what access control costs (`make bench-auth`):
#   ours-auth       records-service, WORKERS = nproc, AUTH_REQUIRED=all with an HS256 secret;
#                   every request carries a valid bearer token (made here, scope records:read,
#                   valid for a day) in its Authorization header                 127.0.0.1:8031
#
# Each run: start the server, wait until it answers, warm up (WARMUP_SECONDS), a closed-loop run
# of BENCH_SECONDS for peak throughput, then a fixed-rate run (oha -q) at LATENCY_LOAD (0.7) of
# that peak for latency, and the server's peak resident memory (VmHWM); stop the server.
# Around each closed-loop run the CPU time of the server (utime + stime from /proc/PID/stat,
# children included) and of every `postgres` process (the server's backends; new ones count
# whole) is read, and their context switches: the report divides by the requests served
# (CPU µs per request: steadier on a shared machine than req/s).
# Then the connections sweep: per round, per system, a fresh server measured closed-loop at each
# of SWEEP_CONNECTIONS (500,2000; empty: none) for SWEEP_SECONDS (10) after the warm-up, with its
# VmHWM; the report gives req/s, p99, RSS and RSS per connection (the slope from
# BENCH_CONNECTIONS) per point.
# Output: bench-results/{results.json,table.md,runs.jsonl,raw/,logs/} and docs/benchmark.png;
# the markdown table is printed at the end.
#
# Usually run as `make bench` (which builds the release binary and runs `migrate` first). Alone:
#   scripts/bench.sh
#   SYSTEMS=fastapi,axum BENCH_SECONDS=5 ROUNDS=1 BENCH_ROWS=100000 scripts/bench.sh
#
# Knobs (environment):
#   BENCH_SECONDS (30)  WARMUP_SECONDS (5)  ROUNDS (3)  BENCH_ROWS (10000000)
#   BENCH_CONNECTIONS (50)  SYSTEMS (ours,ours-1,xitca,axum,fastapi; the others above by name)
#   LATENCY_LOAD (0.7)
#   LATENCY_RATE (empty: LATENCY_LOAD of each system's own peak; a number: that many req/s for
#     every system's fixed-rate run, so their latencies are compared at the same offered load)
#   SWEEP_CONNECTIONS (500,2000)  SWEEP_SECONDS (10)
#   BENCH_PGSSLMODE (disable: exported as PGSSLMODE, which records-service and libpq (FastAPI) read,
#     so that every system talks to PostgreSQL in plaintext as the Rust references (NoTls) do; a
#     local cluster with ssl=on would otherwise put TLS on our side only)
#   BENCH_TOOL (oha; wrk is the fallback when oha cannot be installed: no fixed-rate run then,
#     latency comes from the closed-loop run)   BENCH_THREADS (wrk threads: 1 up to 4 CPUs, else nproc/4)
#   BENCH_OUT (bench-results)  BENCH_CHART (docs/benchmark.png)
#   OURS_BIN (target/release/records-service)  BENCH_BUILD_JOBS (2)
#   POSTGRES_DB_* (default: the project's own PostgreSQL, scripts/localpg.sh)
#
# How ids are drawn: with oha, --rand-regex-url and a regex built by `benches/report.py id-regex`
# (an alternation of decimal blocks weighted by size, so that every id in 1..BENCH_ROWS has the
# same probability to within 0.1%; ids below BENCH_ROWS/10000 are never drawn); the script checks
# a sample of 200,000 generated URLs before measuring (results.json: meta.id_check). With wrk,
# benches/random_user.lua draws math.random(1, BENCH_ROWS) per request.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_SECONDS=${BENCH_SECONDS:-30}
WARMUP_SECONDS=${WARMUP_SECONDS:-5}
ROUNDS=${ROUNDS:-3}
BENCH_ROWS=${BENCH_ROWS:-10000000}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-50}
SYSTEMS=${SYSTEMS:-ours,ours-1,xitca,axum,fastapi}
SWEEP_CONNECTIONS=${SWEEP_CONNECTIONS-500,2000}
SWEEP_SECONDS=${SWEEP_SECONDS:-10}
export PGSSLMODE=${BENCH_PGSSLMODE:-disable}
LATENCY_LOAD=${LATENCY_LOAD:-0.7}
LATENCY_RATE=${LATENCY_RATE:-}
BENCH_TOOL=${BENCH_TOOL:-oha}
BENCH_THREADS=${BENCH_THREADS:-$(( $(nproc) <= 4 ? 1 : $(nproc) / 4 ))}
OUT_DIR=${BENCH_OUT:-bench-results}
CHART=${BENCH_CHART:-docs/benchmark.png}
OURS_BIN=${OURS_BIN:-target/release/records-service}
BUILD_JOBS=${BENCH_BUILD_JOBS:-2}
VENV=.venv/bench
AXUM_DIR=benches/compare/axum
AXUM_BIN=$AXUM_DIR/target/release/axum-records
XITCA_DIR=benches/compare/xitca
XITCA_BIN=$XITCA_DIR/target/release/xitca-records
XITCA_PLAIN_DIR=benches/compare/xitca-plain
XITCA_PLAIN_BIN=$XITCA_PLAIN_DIR/target/release/xitca-records-plain
NPROC=$(nproc)

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

for v in BENCH_SECONDS WARMUP_SECONDS ROUNDS BENCH_ROWS BENCH_CONNECTIONS BENCH_THREADS SWEEP_SECONDS; do
  { [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ]; } || die "$v must be a positive integer (got '${!v}')"
done
[[ $LATENCY_LOAD =~ ^0?\.[0-9]+$|^1(\.0*)?$ ]] || die "LATENCY_LOAD must be in (0, 1] (got '$LATENCY_LOAD')"
[ -z "$LATENCY_RATE" ] || [[ $LATENCY_RATE =~ ^[1-9][0-9]*$ ]] || die "LATENCY_RATE must be a positive integer (got '$LATENCY_RATE')"
IFS=',' read -r -a SYS <<<"${SYSTEMS// /}"
[ ${#SYS[@]} -gt 0 ] || die "SYSTEMS is empty"
IFS=',' read -r -a SWEEP <<<"${SWEEP_CONNECTIONS// /}"
for c in "${SWEEP[@]}"; do
  { [[ $c =~ ^[0-9]+$ ]] && [ "$c" -gt 0 ]; } || die "SWEEP_CONNECTIONS must be positive integers (got '$SWEEP_CONNECTIONS')"
done
# thousands of connections need as many descriptors in the load generator and the servers
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
wants() { local s; for s in "${SYS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
for s in "${SYS[@]}"; do
  case $s in
    ours|ours-1|ours-nometrics|ours-access|ours-auth|xitca|xitca-epoll|xitca-plain|axum|fastapi) ;;
    ours-base) [ -x "${BASE_BIN:-}" ] || die "ours-base needs BASE_BIN, an executable (got '${BASE_BIN:-}')" ;;
    *) die "unknown system '$s' (known: ours, ours-1, ours-nometrics, ours-access, ours-auth, ours-base, xitca, xitca-epoll, xitca-plain, axum, fastapi)" ;;
  esac
done

port_of() {
  case $1 in
    ours) echo 8001 ;; ours-1) echo 8011 ;; axum) echo 8002 ;; fastapi) echo 8003 ;; xitca) echo 8004 ;;
    ours-nometrics) echo 8021 ;; ours-access) echo 8022 ;; ours-base) echo 8023 ;;
    xitca-epoll) echo 8014 ;; xitca-plain) echo 8024 ;; ours-auth) echo 8031 ;;
  esac
}

# ours-auth's secret and token: HS256 (RFC 7519) signed here with Python's standard library,
# the token valid for a day with the scope records:read. Only ours-auth's load carries it.
BENCH_AUTH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
BENCH_AUTH_HEADER="Authorization: Bearer $(python3 - "$BENCH_AUTH_SECRET" <<'EOF'
import base64, hashlib, hmac, json, sys, time
def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
claims = {"sub": "bench", "exp": int(time.time()) + 86400, "scope": "records:read"}
signed = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
print(signed + "." + b64(hmac.new(sys.argv[1].encode(), signed.encode(), hashlib.sha256).digest()))
EOF
)"
export BENCH_AUTH_SECRET BENCH_AUTH_HEADER

# --- cleanup: never leave a server behind ------------------------------------------------------
. scripts/lib/bench-servers.sh

# --- tools ---------------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
ensure_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  log "installing wrk (apt-get)"
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq wrk >/dev/null; } || true
  fi
  command -v wrk >/dev/null 2>&1
}
ensure_oha() {
  command -v oha >/dev/null 2>&1 && return 0
  command -v cargo >/dev/null 2>&1 || return 1
  log "installing oha (cargo install oha --locked; a few minutes)"
  nice -n 10 cargo install oha --locked -j "$BUILD_JOBS" >&2 || return 1
  command -v oha >/dev/null 2>&1
}
case $BENCH_TOOL in
  oha)
    if ! ensure_oha; then
      log "oha could not be installed; falling back to wrk (no fixed-rate latency run)"
      BENCH_TOOL=wrk
      ensure_wrk || die "neither oha nor wrk could be installed"
    fi ;;
  wrk) ensure_wrk || die "wrk could not be installed" ;;
  *) die "BENCH_TOOL must be oha or wrk" ;;
esac
[ -z "$LATENCY_RATE" ] || [ "$BENCH_TOOL" = oha ] || log "LATENCY_RATE is ignored: wrk has no fixed-rate mode"
if [ "$BENCH_TOOL" = oha ]; then
  { oha --help | grep -q -- '--rand-regex-url' && oha --help | grep -q -- '--output-format' \
    && oha --help | grep -q -- '--dump-urls'; } \
    || die "oha $(oha --version) is too old (needs --rand-regex-url, --output-format, --dump-urls): cargo install oha --locked --force"
  TOOL_VERSION=$(oha --version | head -1)
else
  TOOL_VERSION=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)
fi
command -v curl >/dev/null 2>&1 || die "curl is needed"

# --- Python virtualenv: FastAPI stack, psycopg (seed check), matplotlib (chart) -----------------
REQS=benches/compare/fastapi/requirements.txt
stamp="$(cat "$REQS"; echo matplotlib)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.bench-installed" 2>/dev/null)" != "$stamp" ]; then
  log "creating virtualenv $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$VENV"; python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
  fi
  "$VENV/bin/pip" install -q --upgrade pip >&2 || true
  "$VENV/bin/pip" install -q -r "$REQS" 'matplotlib>=3.7' >&2
  echo "$stamp" >"$VENV/.bench-installed"
fi
PY="$VENV/bin/python"

# --- builds --------------------------------------------------------------------------------------
if wants axum; then
  log "building the axum reference (release)"
  (cd "$AXUM_DIR" && nice -n 10 cargo build --release --locked -j "$BUILD_JOBS" --target-dir target >&2)
  [ -x "$AXUM_BIN" ] || die "axum build produced no $AXUM_BIN"
fi
if wants xitca || wants xitca-epoll; then
  log "building the xitca-web reference (release)"
  (cd "$XITCA_DIR" && nice -n 10 cargo build --release --locked -j "$BUILD_JOBS" --target-dir target >&2)
  [ -x "$XITCA_BIN" ] || die "xitca build produced no $XITCA_BIN"
fi
if wants xitca-plain; then
  log "building the old xitca-web reference, xitca-plain (release)"
  (cd "$XITCA_PLAIN_DIR" && nice -n 10 cargo build --release --locked -j "$BUILD_JOBS" --target-dir target >&2)
  [ -x "$XITCA_PLAIN_BIN" ] || die "xitca-plain build produced no $XITCA_PLAIN_BIN"
fi
if { wants ours || wants ours-1 || wants ours-nometrics || wants ours-access || wants ours-auth; } \
  && [ ! -x "$OURS_BIN" ]; then
  log "building records-service (release)"
  nice -n 10 cargo build --release --locked -j "$BUILD_JOBS" >&2
  [ -x "$OURS_BIN" ] || die "no $OURS_BIN after cargo build"
fi

# --- database ------------------------------------------------------------------------------------
if [ -z "${POSTGRES_DB_HOST:-}" ]; then
  scripts/localpg.sh start
  eval "$(scripts/localpg.sh env)"
fi
export POSTGRES_DB_HOST POSTGRES_DB_PORT POSTGRES_DB_NAME POSTGRES_DB_USER POSTGRES_DB_PASSWORD
if [ -x "$OURS_BIN" ]; then
  "$OURS_BIN" migrate >&2
  log "making sure ids 1..$BENCH_ROWS exist (records-service seed; the first time takes minutes)"
  "$OURS_BIN" seed --rows "$BENCH_ROWS" >&2
else
  log "no $OURS_BIN: not seeding; checking the table as it is"
fi
DB_INFO=$("$PY" - "$BENCH_ROWS" <<'EOF'
import json, os, sys
import psycopg
n = int(sys.argv[1])
with psycopg.connect(host=os.environ["POSTGRES_DB_HOST"], port=os.environ.get("POSTGRES_DB_PORT", "5432"),
                     dbname=os.environ["POSTGRES_DB_NAME"], user=os.environ["POSTGRES_DB_USER"],
                     password=os.environ["POSTGRES_DB_PASSWORD"]) as conn:
    have = conn.execute("select count(*) from records where id between 1 and %s", (n,)).fetchone()[0]
    total = conn.execute("select count(*) from records").fetchone()[0]
    version = conn.execute("show server_version").fetchone()[0]
    size = conn.execute("select pg_size_pretty(pg_total_relation_size('records'))").fetchone()[0]
    sb = conn.execute("show shared_buffers").fetchone()[0]
print(json.dumps({"ids_present": have, "rows_total": total, "server_version": version,
                  "table_size": size, "shared_buffers": sb}))
if have != n:
    sys.exit(f"the records table holds {have} of the ids 1..{n}: seed it (records-service seed --rows {n})")
EOF
) || die "database check failed"
log "database: $DB_INFO"

# --- how ids are drawn ---------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
rm -rf "$OUT_DIR/raw" "$OUT_DIR/logs" "$OUT_DIR/runs.jsonl" "$OUT_DIR/sweep.jsonl"
mkdir -p "$OUT_DIR/raw" "$OUT_DIR/logs"
ID_CHECK=null
if [ "$BENCH_TOOL" = oha ]; then
  ID_REGEX=$("$PY" benches/report.py id-regex "$BENCH_ROWS")
  timeout --foreground 120 oha --dump-urls 200000 --rand-regex-url "http://127.0.0.1:1/user/$ID_REGEX" >"$OUT_DIR/raw/id-sample.txt"
  ID_CHECK=$("$PY" benches/report.py check-ids "$OUT_DIR/raw/id-sample.txt" "$BENCH_ROWS") \
    || die "generated ids are not uniform: $ID_CHECK"
  rm -f "$OUT_DIR/raw/id-sample.txt"
  log "id distribution check: $ID_CHECK"
fi

# --- machine description -------------------------------------------------------------------------
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
MEM_GB=$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)
MACHINE="${CPU:-unknown CPU}, $NPROC CPUs, ${MEM_GB} GB RAM, Linux $(uname -r); PostgreSQL, server and load generator on the same machine"
"$PY" - <<EOF
import json
meta = {
    "machine": """$MACHINE""",
    "nproc": $NPROC,
    "rows": $BENCH_ROWS,
    "connections": $BENCH_CONNECTIONS,
    "sweep_connections": [int(c) for c in "${SWEEP[*]:-}".split()],
    "sweep_seconds": $SWEEP_SECONDS,
    "records_service_sslmode": "$PGSSLMODE",
    "seconds": $BENCH_SECONDS,
    "warmup_seconds": $WARMUP_SECONDS,
    "rounds": $ROUNDS,
    "latency_load": $LATENCY_LOAD,
    "latency_rate": ${LATENCY_RATE:-None},
    "systems": "$SYSTEMS".split(","),
    "tool": """$BENCH_TOOL ($TOOL_VERSION)""",
    "fixed_rate_run": "$BENCH_TOOL" == "oha",
    "id_draw": ("oha --rand-regex-url with benches/report.py id-regex" if "$BENCH_TOOL" == "oha"
                else "wrk benches/random_user.lua: math.random(1, rows) per request"),
    "id_check": json.loads('''$ID_CHECK'''),
    "database": json.loads('''$DB_INFO'''),
}
json.dump(meta, open("$OUT_DIR/meta.json", "w"), indent=2)
EOF

# --- one measured run ----------------------------------------------------------------------------
# Resident memory of the server and its children, in kB: "peak current" (VmHWM, VmRSS summed).
rss_kb() {
  local pids=$1 p kids hwm=0 rss=0 v
  kids=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
  for p in $pids $kids; do
    v=$(awk '/^VmHWM:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0); hwm=$((hwm + ${v:-0}))
    v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0); rss=$((rss + ${v:-0}))
  done
  echo "$hwm $rss"
}

load() { # port seconds rate(0 = closed loop) outfile [connections]
  local port=$1 secs=$2 rate=$3 out=$4 conns=${5:-$BENCH_CONNECTIONS}
  local limit=$((secs + 60)) headers=()
  [ "$port" = "$(port_of ours-auth)" ] && headers=(-H "$BENCH_AUTH_HEADER")
  if [ "$BENCH_TOOL" = oha ]; then
    local extra=("${headers[@]}")
    [ "$rate" -gt 0 ] && extra+=(-q "$rate" --latency-correction)
    timeout --foreground "$limit" oha --no-tui --output-format json -w -z "${secs}s" -c "$conns" \
      "${extra[@]}" --rand-regex-url "http://127.0.0.1:$port/user/$ID_REGEX" >"$out" 2>"$out.err" &
    LOAD_PID=$!
    wait "$LOAD_PID" || die "oha failed or ran past ${limit}s (see $out.err)"
  else
    timeout --foreground "$limit" wrk -c "$conns" -t "$BENCH_THREADS" -d "${secs}s" --latency \
      "${headers[@]}" -s benches/random_user.lua "http://127.0.0.1:$port" -- "$BENCH_ROWS" >"$out" 2>"$out.err" &
    LOAD_PID=$!
    wait "$LOAD_PID" || die "wrk failed or ran past ${limit}s (see $out.err)"
  fi
  LOAD_PID=""
}

# Starts the system, warms it up, then runs the closed loop with the CPU read before and after
# (raw/TAG-{warmup,peak,cpu0,cpu1}.json); the server keeps running.
closed_loop() { # system port tag connections seconds
  local sys=$1 port=$2 tag=$3 conns=$4 secs=$5
  start_system "$sys" "$port" "$OUT_DIR/logs/$tag.log"
  load "$port" "$WARMUP_SECONDS" 0 "$OUT_DIR/raw/$tag-warmup.json" "$conns"
  "$PY" benches/report.py proc-cpu "$SERVER_PID" >"$OUT_DIR/raw/$tag-cpu0.json"
  load "$port" "$secs" 0 "$OUT_DIR/raw/$tag-peak.json" "$conns"
  "$PY" benches/report.py proc-cpu "$SERVER_PID" >"$OUT_DIR/raw/$tag-cpu1.json"
}

# Reads the server's memory into MEM ("peak current" kB) and stops it; dies if it had died.
stop_measured() { # system tag
  MEM=$(rss_kb "$SERVER_PID")
  kill -0 "$SERVER_PID" 2>/dev/null || die "$1 died during the run (log: $OUT_DIR/logs/$2.log)"
  stop_server
}

bench_one() { # system round
  local sys=$1 round=$2 port tag
  port=$(port_of "$sys")
  tag="$sys-r$round"
  log "round $round/$ROUNDS: $sys on 127.0.0.1:$port"
  closed_loop "$sys" "$port" "$tag" "$BENCH_CONNECTIONS" "$BENCH_SECONDS"
  local peak rate=0 fixed_file=null
  peak=$("$PY" benches/report.py peak-rps "$OUT_DIR/raw/$tag-peak.json")
  if [ "$BENCH_TOOL" = oha ]; then
    if [ -n "$LATENCY_RATE" ]; then
      rate=$LATENCY_RATE
      "$PY" -c "import sys; sys.exit(0 if $rate <= $peak else 1)" \
        || log "  LATENCY_RATE $rate is above this run's peak ($peak req/s): the fixed-rate run saturates"
    else
      rate=$("$PY" -c "print(max(1, int($peak * $LATENCY_LOAD)))")
    fi
    log "  peak $peak req/s; fixed-rate run at $rate req/s"
    load "$port" "$BENCH_SECONDS" "$rate" "$OUT_DIR/raw/$tag-fixed.json"
    fixed_file="\"raw/$tag-fixed.json\""
  else
    log "  peak $peak req/s"
  fi
  stop_measured "$sys" "$tag"
  printf '{"system":"%s","round":%d,"port":%d,"connections":%d,"peak_file":"raw/%s-peak.json","fixed_file":%s,"fixed_target_rps":%d,"rss_kb":%d,"rss_end_kb":%d,"cpu_files":["raw/%s-cpu0.json","raw/%s-cpu1.json"]}\n' \
    "$sys" "$round" "$port" "$BENCH_CONNECTIONS" "$tag" "$fixed_file" "$rate" "${MEM% *}" "${MEM#* }" "$tag" "$tag" >>"$OUT_DIR/runs.jsonl"
  sleep 2 # let sockets and PostgreSQL backends of the stopped server go away
}

sweep_one() { # system round connections
  local sys=$1 round=$2 conns=$3 port tag
  port=$(port_of "$sys")
  tag="$sys-r$round-c$conns"
  log "round $round/$ROUNDS: $sys at $conns connections"
  closed_loop "$sys" "$port" "$tag" "$conns" "$SWEEP_SECONDS"
  log "  $("$PY" benches/report.py peak-rps "$OUT_DIR/raw/$tag-peak.json") req/s"
  stop_measured "$sys" "$tag"
  printf '{"system":"%s","round":%d,"port":%d,"connections":%d,"peak_file":"raw/%s-peak.json","rss_kb":%d,"rss_end_kb":%d,"cpu_files":["raw/%s-cpu0.json","raw/%s-cpu1.json"]}\n' \
    "$sys" "$round" "$port" "$conns" "$tag" "${MEM% *}" "${MEM#* }" "$tag" "$tag" >>"$OUT_DIR/sweep.jsonl"
  sleep 2
}

# --- rounds: every system once per round, the order rotated each round ---------------------------
FIXED_AT=${LATENCY_RATE:+$LATENCY_RATE req/s}
FIXED_AT=${FIXED_AT:-$LATENCY_LOAD of peak}
log "systems: ${SYS[*]}; $ROUNDS round(s) of ${WARMUP_SECONDS}s warm-up + ${BENCH_SECONDS}s peak$([ "$BENCH_TOOL" = oha ] && echo " + ${BENCH_SECONDS}s at $FIXED_AT"); $BENCH_CONNECTIONS connections; $BENCH_TOOL"
n=${#SYS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    bench_one "${SYS[$(((i + r - 1) % n))]}" "$r"
  done
  for c in "${SWEEP[@]}"; do
    for ((i = 0; i < n; i++)); do
      sweep_one "${SYS[$(((i + r - 1) % n))]}" "$r" "$c"
    done
  done
done

"$PY" benches/report.py report "$OUT_DIR" "$CHART"
log "results: $OUT_DIR/results.json, $OUT_DIR/table.md, $CHART"
