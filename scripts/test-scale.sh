#!/usr/bin/env bash
# Replicas behind a balancer, restarted one after another under load, at zero errors (run by
# .ci/run; needs Docker, installed and started by scripts/docker-env.sh when missing).
#
# The compose file's `scale` profile with REPLICAS (3) service replicas behind HAProxy. wrk sends
# GET /user/{id} through the balancer for the whole test while every replica in turn gets
# `docker stop` (SIGTERM: /readyz turns 503, SHUTDOWN_DELAY_MS of serving on, graceful
# shutdown), exits, is started again and becomes healthy. Passes when wrk saw no non-2xx
# response and no socket error, every replica exited 0, and the throughput after the restarts is
# at least half the throughput before them (it recovered). Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/docker-env.sh
docker_engine
docker_images haproxy:2.6
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk >/dev/null; }

REPLICAS=${REPLICAS:-3}
export COMPOSE_PROJECT_NAME=records-scale-$$
. scripts/lib/test-helpers.sh # free_port
RECORDS_PORT=$(free_port)
BALANCER_PORT=$(free_port)
export RECORDS_PORT BALANCER_PORT
URL="http://127.0.0.1:$BALANCER_PORT"
compose() { "${COMPOSE[@]}" -f docker/docker-compose.yml --profile scale "$@"; }
step() { echo "test-scale: $*" >&2; }
fail() {
  echo "test-scale: FAIL: $*" >&2
  compose logs --no-color --tail 30 replica balancer >&2 || true
  exit 1
}
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ]; }
wait_healthy() {
  for _ in $(seq 150); do healthy "$1" && return 0; sleep 1; done
  return 1
}
wrk_run() { # seconds output-file
  wrk -t2 -c16 -d"$1"s -s benches/random_user.lua "$URL" -- 100000 >"$2" 2>&1
}
rps() { awk '/Requests\/sec/ {print int($2)}' "$1"; }

step "building and starting $REPLICAS replicas behind HAProxy (balancer on $BALANCER_PORT)"
compose build replica >/dev/null || fail "build"
compose up -d --scale replica="$REPLICAS" || fail "compose up"
mapfile -t replicas < <(compose ps -q replica)
[ "${#replicas[@]}" = "$REPLICAS" ] || fail "${#replicas[@]} replicas running, not $REPLICAS"
for r in "${replicas[@]}"; do wait_healthy "$r" || fail "replica $r never became healthy"; done
# Until the balancer has seen every replica up (rise 2 x 500 ms) and answers.
for _ in $(seq 60); do curl -sf "$URL/user/1" >/dev/null && break; sleep 0.5; done
step "all healthy"

work=$(mktemp -d)
wrk_run 5 "$work/before.txt"
before=$(rps "$work/before.txt")
step "before the restarts: $before req/s"

# Load for the whole rolling restart; long enough to cover it, ended early by killing wrk is
# not allowed (it would not print its totals), so sized generously and waited for.
restart_s=$(( REPLICAS * 14 + 10 ))
wrk_run "$restart_s" "$work/during.txt" &
load=$!
sleep 2
for r in "${replicas[@]}"; do
  started=$(date +%s%N)
  docker stop "$r" >/dev/null
  code=$(docker inspect -f '{{.State.ExitCode}}' "$r")
  step "replica ${r:0:12} stopped: exit $code after $(( ($(date +%s%N) - started) / 1000000 )) ms"
  [ "$code" = 0 ] || fail "replica $r exited $code"
  docker start "$r" >/dev/null
  wait_healthy "$r" || fail "replica $r did not come back healthy"
  sleep 2   # the balancer's rise (2 checks, 500 ms apart) and a margin
done
step "every replica restarted; waiting for the load to finish"
wait "$load" || fail "wrk failed: $(cat "$work/during.txt")"
cat "$work/during.txt" >&2
if grep -q "Non-2xx" "$work/during.txt"; then fail "non-2xx responses during the restarts"; fi
if grep -q "Socket errors" "$work/during.txt"; then fail "socket errors during the restarts"; fi
total=$(awk '/requests in/ {print $1}' "$work/during.txt")
[ "${total:-0}" -gt 0 ] || fail "no requests were made"

wrk_run 5 "$work/after.txt"
after=$(rps "$work/after.txt")
step "during: $total requests, 0 errors; after the restarts: $after req/s (before: $before)"
[ "$after" -ge $(( before / 2 )) ] || fail "throughput did not recover: $after req/s after, $before before"
rm -rf "$work"
step "PASS"
