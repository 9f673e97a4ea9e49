#!/usr/bin/env bash
# System calls, context switches and CPU per request: each system serves
# GET /user/{id} (ids uniform in 1..BENCH_ROWS) to wrk with CONNECTIONS keep-alive connections,
# while `perf stat` counts, in the server process only, every system call (and the common ones
# by name), its context switches and its CPU time (task-clock), for exactly the duration of the
# wrk run; each count is divided by the requests wrk completed. ROUNDS rounds, systems
# alternating; medians. The output table is bench-results/syscalls.md.
#
#   ours        records-service (OURS_BIN, WORKERS = nproc)
#   ours-base   BASE_BIN, another build of records-service (e.g. the previous commit)
#   xitca       benches/compare/xitca (xitca-web + xitca-postgres, WORKERS = nproc; its HTTP
#               socket on io_uring: what the ring does for it is not a system call, so its
#               counts are only comparable with xitca-epoll's and xitca-plain's for the rest)
#   xitca-epoll the same binary with XITCA_IO_URING=0
#   xitca-plain benches/compare/xitca-plain, the reference before issue 23
#
# Knobs: SYSTEMS (ours,xitca; ours-base is added when BASE_BIN is set)  ROUNDS (3)
#   DURATION (10 s)  WARMUP (3 s)  CONNECTIONS (50)  BENCH_ROWS (10000000, seeded by `make bench`)
#   POSTGRES_DB_* (default: the project's own PostgreSQL, scripts/localpg.sh)
# Every system talks to PostgreSQL in plaintext (BENCH_PGSSLMODE, default disable), as in
# scripts/bench.sh. Server logs: bench-results/syscalls-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-50}
BENCH_ROWS=${BENCH_ROWS:-10000000}
OURS_BIN=${OURS_BIN:-target/release/records-service}
XITCA_BIN=benches/compare/xitca/target/release/xitca-records
XITCA_PLAIN_BIN=benches/compare/xitca-plain/target/release/xitca-records-plain
SYSTEMS=${SYSTEMS:-ours${BASE_BIN:+,ours-base},xitca}
OUT=${BENCH_OUT:-bench-results}
NPROC=$(nproc)
export PGSSLMODE=${BENCH_PGSSLMODE:-disable}

log() { echo "bench-syscalls: $*" >&2; }
die() { echo "bench-syscalls: error: $*" >&2; exit 1; }
. scripts/lib/bench-servers.sh

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 \
  || die "perf cannot read syscall tracepoints here (run as root; kernel.perf_event_paranoid)"
IFS=',' read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do
  case $s in
    ours) [ -x "$OURS_BIN" ] || cargo build --release >&2 ;;
    ours-base) [ -x "${BASE_BIN:-}" ] || die "ours-base needs BASE_BIN" ;;
    xitca|xitca-epoll) (cd benches/compare/xitca && cargo build --release --locked >&2) ;;
    xitca-plain) (cd benches/compare/xitca-plain && cargo build --release --locked >&2) ;;
    *) die "unknown system '$s' (ours, ours-base, xitca, xitca-epoll, xitca-plain)" ;;
  esac
done
if [ -z "${POSTGRES_DB_HOST:-}" ]; then
  scripts/localpg.sh start
  eval "$(scripts/localpg.sh env)"
fi
export POSTGRES_DB_HOST POSTGRES_DB_PORT POSTGRES_DB_NAME POSTGRES_DB_USER POSTGRES_DB_PASSWORD

EVENTS=raw_syscalls:sys_enter
for call in recvfrom sendto read write epoll_wait futex; do
  EVENTS+=",syscalls:sys_enter_$call"
done
EVENTS+=",context-switches,cpu-migrations,task-clock"

mkdir -p "$OUT" "$OUT/syscalls-logs"
RUNS="$OUT/syscalls.jsonl"
: >"$RUNS"
port=8031
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < ${#SYS[@]}; i++)); do
    sys=${SYS[$(((i + r - 1) % ${#SYS[@]}))]}
    logf="$OUT/syscalls-logs/$sys-r$r.log"
    start_system "$sys" "$port" "$logf"
    wrk -c "$CONNECTIONS" -t 1 -d "${WARMUP}s" -s benches/random_user.lua "http://127.0.0.1:$port" \
      -- "$BENCH_ROWS" >/dev/null
    perf stat -x, -e "$EVENTS" -p "$SERVER_PID" -o "$OUT/syscalls-$sys-r$r.perf" -- \
      wrk -c "$CONNECTIONS" -t 1 -d "${DURATION}s" -s benches/random_user.lua \
      "http://127.0.0.1:$port" -- "$BENCH_ROWS" >"$OUT/syscalls-$sys-r$r.wrk"
    stop_server
    python3 - "$sys" "$r" "$OUT/syscalls-$sys-r$r.perf" "$OUT/syscalls-$sys-r$r.wrk" >>"$RUNS" <<'EOF'
import json, re, sys
system, rnd, perf, wrk = sys.argv[1:]
text = open(wrk).read()
requests = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if bad:
    sys.exit(f"{system}: {bad.group(1)} answers were not 2xx (is the table seeded up to BENCH_ROWS?)")
counts = {}
for line in open(perf):
    parts = line.strip().split(",")
    if len(parts) > 3 and parts[2]:
        # "<not counted>" / "<not supported>": no figure rather than a zero
        counts[parts[2]] = float(parts[0]) if parts[0][:1].isdigit() else None
print(json.dumps({"system": system, "round": int(rnd), "requests": requests, "counts": counts}))
EOF
    log "round $r: $sys $(tail -1 "$RUNS" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["requests"], "requests")')"
    sleep 1
  done
done

python3 - "$RUNS" "$OUT/syscalls.md" "$CONNECTIONS" "$DURATION" "$ROUNDS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, conns, secs, rounds = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
systems = list(dict.fromkeys(r["system"] for r in runs))
cols = [
    ("system calls", "raw_syscalls:sys_enter", 1),
    ("recvfrom", "syscalls:sys_enter_recvfrom", 1),
    ("sendto", "syscalls:sys_enter_sendto", 1),
    ("read", "syscalls:sys_enter_read", 1),
    ("write", "syscalls:sys_enter_write", 1),
    ("epoll_wait", "syscalls:sys_enter_epoll_wait", 1),
    ("futex", "syscalls:sys_enter_futex", 1),
    ("context switches", "context-switches", 1),
    ("CPU µs", "task-clock", 1000),  # perf reports task-clock in ms
]
lines = [
    f"Per request, in the server process (`perf stat -p` for the length of a wrk run, {conns} "
    f"connections, {secs} s, GET /user/{{id}}); medians of {rounds} rounds, systems alternating.",
    "",
    "| system | req/s | " + " | ".join(c[0] for c in cols) + " |",
    "|---|--:|" + "--:|" * len(cols),
]
for s in systems:
    rs = [r for r in runs if r["system"] == s]
    rps = statistics.median(r["requests"] / float(secs) for r in rs)
    cells = []
    for _, key, scale in cols:
        vals = [
            r["counts"][key] * scale / r["requests"]
            for r in rs
            if r["requests"] and r["counts"].get(key) is not None
        ]
        cells.append(f"{statistics.median(vals):.2f}" if vals else "–")
    lines.append(f"| {s} | {rps:,.0f} | " + " | ".join(cells) + " |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
