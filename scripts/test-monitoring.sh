#!/usr/bin/env bash
# The monitoring side, end to end, against a real Prometheus (run by `make test-monitoring`):
#
#   scripts/localpg.sh start && eval "$(scripts/localpg.sh env)"   # ids 1..100000 seeded
#   scripts/test-monitoring.sh                  # BIN=target/debug/records-service for a debug build
#
# 1. promtool check config on docker/monitoring/prometheus.yml (the compose profile's);
# 2. starts the service ($BIN serve on a free port, WORKERS=2) and waits for /readyz 200;
#    `curl -s /metrics | promtool check metrics` must print nothing and exit 0 (curl sends no
#    Accept header: the classic text format, which is what promtool reads);
# 3. starts Prometheus (a temp data dir, a free port) scraping the service every 1 s and waits
#    for the target to be up (/api/v1/targets);
# 4. wrk: GET /user/{id} with random ids 1..ROWS (100000) for LOAD_SECONDS (20), --latency
#    (much shorter loads make the rate check's 10% tight: Prometheus' extrapolation is worth
#    up to about one scrape interval of the load, see monitoring_check.py);
# 5. Prometheus' view of the load against wrk's (scripts/monitoring_check.py compare): request
#    count and rate within 10%, p99 and mean within the bounds explained there;
# 6. /metrics against docs/metrics.md (names, types, labels, buckets), as Prometheus gets it
#    (OpenMetrics, by its Accept header) and as curl does (the classic text format);
# 7. every metric and label that the Grafana dashboard's queries, legends and variables use
#    exists in /metrics, and every query evaluates on Prometheus.
# Prints PASS/FAIL lines; exits non-zero when any check failed. Everything it started is
# stopped on exit; the temp directory (logs, snapshots) is kept when a check failed.
# Needs: curl, wrk, python3, prometheus and promtool (Debian: apt-get install prometheus wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/records-service}
ROWS=${ROWS:-100000}
LOAD_SECONDS=${LOAD_SECONDS:-20}
JOB=records-service
ROUTE='/user/{id}'
DASHBOARD=docker/monitoring/grafana/dashboards/records-service.json
PROM_CONFIG=docker/monitoring/prometheus.yml
check() { python3 scripts/monitoring_check.py "$@"; }
# What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'

failures=0
pids=()
tmp=""
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
step() { echo "test-monitoring: $*" >&2; }
show_logs() {
  [ -n "$tmp" ] || return 0
  local f
  for f in "$tmp/app.log" "$tmp/prometheus.log"; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f" >&2
    tail -n 20 "$f" >&2
  done
}
abort() { fail "$*"; exit 1; }
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  # Only what this script started, by process id.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ] || [ "$failures" != 0 ]; then
    show_logs
    [ -z "$tmp" ] || echo "test-monitoring: logs and snapshots kept in $tmp" >&2
  elif [ -n "$tmp" ]; then
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Whether the service still runs; when not, its exit status and last log line are shown (a
# SIGTERM from elsewhere shows as "SIGTERM received" in its log).
app_alive() {
  kill -0 "$app_pid" 2>/dev/null && return 0
  local rc=0
  wait "$app_pid" 2>/dev/null || rc=$?
  echo "test-monitoring: the service (pid $app_pid) is gone, exit status $rc; its last log line:" >&2
  tail -n 1 "$tmp/app.log" >&2
  return 1
}
# A check run as a command: its own PASS/FAIL lines, one failure counted when it fails.
run_check() { if "$@"; then :; else failures=$((failures + 1)); fi; }
# free_port, wait_200
. scripts/lib/test-helpers.sh

# --------------------------------------------------------------------------- prerequisites
for tool in curl wrk python3 prometheus promtool; do
  command -v "$tool" >/dev/null || abort "$tool is not installed (apt-get install prometheus wrk curl)"
done
[ -x "$BIN" ] || abort "no service binary at $BIN (cargo build --release, or set BIN)"
if [ -z "${DATABASE_URL:-}" ]; then
  for v in POSTGRES_DB_HOST POSTGRES_DB_PORT POSTGRES_DB_NAME POSTGRES_DB_USER POSTGRES_DB_PASSWORD; do
    [ -n "${!v:-}" ] ||
      abort "$v is not set: scripts/localpg.sh start && eval \"\$(scripts/localpg.sh env)\""
  done
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-monitoring.XXXXXX")

# --------------------------------------------------------------------------- 1. config
if out=$(promtool check config "$PROM_CONFIG" 2>&1); then
  pass "promtool check config $PROM_CONFIG"
else
  fail "promtool check config $PROM_CONFIG:"; echo "$out"
fi

# --------------------------------------------------------------------------- 2. the service
APP_PORT=$(free_port)
APP="http://127.0.0.1:$APP_PORT"
step "starting $BIN on $APP"
# METRICS_ADDR would move /metrics to another listener: this test scrapes the public port.
env -u METRICS_ADDR SERVER_HOST=127.0.0.1 SERVER_PORT="$APP_PORT" WORKERS=2 \
  "$BIN" serve >"$tmp/app.log" 2>&1 &
app_pid=$!
pids+=("$app_pid")
wait_200 "$APP/readyz" 30 "$app_pid" || abort "the service did not answer /readyz 200 within 30 s"
pass "service ready on $APP (/readyz 200)"

code=$(curl -s -o "$tmp/metrics-start.txt" -w '%{http_code}' --max-time 5 "$APP/metrics" || true)
[ "$code" = 200 ] || abort "GET /metrics answered '$code', not 200"
# promtool's linter: it must have nothing to say (its output is shown as is, never filtered).
set +e
out=$(curl -s --max-time 5 "$APP/metrics" | promtool check metrics 2>&1)
rc=$?
set -e
if [ "$rc" = 0 ] && [ -z "$out" ]; then
  pass "curl -s /metrics | promtool check metrics: exit 0, no output"
else
  fail "curl -s /metrics | promtool check metrics: exit $rc, output:"
  printf '%s\n' "$out" | sed 's/^/    /'
  # A diagnosis only (the FAIL above stands), when curl got OpenMetrics: promtool reads the
  # classic text format, where a counter's HELP/TYPE name is its samples' (x_total), not
  # OpenMetrics' family name (x): "x_total no help text" for every counter.
  if grep -qx '# EOF' "$tmp/metrics-start.txt"; then
    classic_file="$tmp/metrics-start.classic.txt"
    if check classic --metrics "$tmp/metrics-start.txt" >"$classic_file" &&
      classic=$(promtool check metrics <"$classic_file" 2>&1) && [ -z "$classic" ]; then
      echo "NOTE: curl got OpenMetrics; the same text in the classic format (counters'" \
        "HELP/TYPE named x_total, no # UNIT or # EOF) passes promtool check metrics"
    else
      echo "NOTE: curl got OpenMetrics; even in the classic format, promtool check metrics says:"
      printf '%s\n' "${classic:-}" | sed 's/^/    /'
    fi
  fi
fi

# --------------------------------------------------------------------------- 3. Prometheus
PROM_PORT=$(free_port)
PROM="http://127.0.0.1:$PROM_PORT"
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: $JOB
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$APP_PORT"]
EOF
if out=$(promtool check config "$tmp/prometheus.yml" 2>&1); then :; else
  abort "the test's own Prometheus config is invalid: $out"
fi
step "starting prometheus on $PROM"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")
wait_200 "$PROM/-/ready" 60 "$prom_pid" || abort "prometheus did not become ready within 60 s"
check wait-target --prom "$PROM" --job "$JOB" --timeout 30 || abort "no scrape target up"

# The route's request count before the load, as Prometheus has it (no series yet: 0).
now=$(date +%s.%N)
check wait-scrape --prom "$PROM" --job "$JOB" --after "$now" --timeout 10 ||
  abort "prometheus did not scrape the service"
before=$(check value --prom "$PROM" \
  --expr "sum(records_service_http_requests_total{route=\"$ROUTE\"})") ||
  abort "querying prometheus failed: $before"

# --------------------------------------------------------------------------- 4. load
# The benchmark's own script: GET /user/{id}, id uniform in 1..ROWS per request.
step "wrk: GET $ROUTE, ids 1..$ROWS, ${LOAD_SECONDS}s"
start=$(date +%s.%N)
wrk -t2 -c16 -d"${LOAD_SECONDS}s" --timeout 5s --latency -s benches/random_user.lua "$APP" -- "$ROWS" \
  >"$tmp/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
wait "$wrk_pid" || abort "wrk failed: $(cat "$tmp/wrk.txt")"
end=$(date +%s.%N)
sed 's/^/    /' "$tmp/wrk.txt"
app_alive || abort "the service exited during the load"

# A scrape that began after the last answer (wrk's end + 0.5 s for those still being written).
check wait-scrape --prom "$PROM" --job "$JOB" \
  --after "$(python3 -c "print($end + 0.5)")" --timeout 15 ||
  abort "prometheus did not scrape the service after the load"
app_alive || abort "the service exited after the load"
# /metrics as Prometheus gets it (its Accept header: OpenMetrics) and as curl does (none).
curl -sS --max-time 5 -H "Accept: $PROMETHEUS_ACCEPT" -D "$tmp/metrics-headers.txt" \
  -o "$tmp/metrics-after.txt" "$APP/metrics" || abort "GET /metrics after the load failed"
curl -sS --max-time 5 -D "$tmp/metrics-classic-headers.txt" -o "$tmp/metrics-after-classic.txt" \
  "$APP/metrics" || abort "GET /metrics after the load failed"

# --------------------------------------------------------------------------- 5. wrk vs Prometheus
run_check check compare --prom "$PROM" --wrk "$tmp/wrk.txt" --metrics "$tmp/metrics-after.txt" \
  --route "$ROUTE" --job "$JOB" --start "$start" --before "$before"

# --------------------------------------------------------------------------- 6. the contract
ctype() { sed -n 's/^[Cc]ontent-[Tt]ype:[[:space:]]*//p' "$1" | tr -d '\r' | tail -n 1; }
run_check check spec --spec docs/metrics.md \
  --metrics "$tmp/metrics-after.txt" --content-type "$(ctype "$tmp/metrics-headers.txt")" \
  --classic "$tmp/metrics-after-classic.txt" \
  --classic-content-type "$(ctype "$tmp/metrics-classic-headers.txt")"

# --------------------------------------------------------------------------- 7. the dashboard
run_check check dashboard --dashboard "$DASHBOARD" --metrics "$tmp/metrics-after.txt" \
  --spec docs/metrics.md --prom "$PROM"

if app_alive; then pass "the service is still running"; else fail "the service exited"; fi
if [ "$failures" = 0 ]; then
  echo "PASS: test-monitoring"
else
  echo "FAIL: test-monitoring: $failures check(s) failed"
  exit 1
fi
