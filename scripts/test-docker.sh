#!/usr/bin/env bash
# The Docker deployment, walked end to end (run by .ci/run; not part of `make test`, which stays
# Docker-free): build the image, bring up docker/docker-compose.yml (PostgreSQL, migrate, seed,
# the service), wait until the service's health check passes, then check
#   - the runtime image is at most 120 MB and runs as a non-root user;
#   - GET /user/1 answers the seeded record; a POST then a GET of the same email;
#   - the Docker engine restarted under the deployment (as on a host reboot): the restart
#     policies alone bring it back, GET /user/1 is served again and a record written before
#     the restart is still there;
#   - `docker stop` (SIGTERM) ends the service with exit status 0 within its shutdown deadline;
# and tear everything down with its volumes. Any failure prints the compose logs and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/docker-env.sh
docker_engine
# shellcheck disable=SC2119 # the default base images only (no extra ones)
docker_images

export COMPOSE_PROJECT_NAME=records-test-$$
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export RECORDS_PORT=$PORT
compose() { "${COMPOSE[@]}" -f docker/docker-compose.yml "$@"; }
fail() {
  echo "test-docker: FAIL: $*" >&2
  compose logs --no-color --tail 50 >&2 || true
  exit 1
}
cleanup() {
  compose down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT
step() { echo "test-docker: $*" >&2; }

step "building the image"
started=$(date +%s)
compose build app >/dev/null || fail "docker build"
step "built in $(( $(date +%s) - started )) s"
# awk reads to the end: exiting at the first match can SIGPIPE compose (exit 141 under pipefail).
image=$(compose config | awk '/image: records-service/ && !found {print $2; found = 1}')
size=$(docker image inspect -f '{{.Size}}' "${image:-records-service:latest}")
step "image size $((size / 1000000)) MB"
[ "$size" -le 120000000 ] || fail "the image is $size bytes, over 120 MB"
user=$(docker image inspect -f '{{.Config.User}}' "${image:-records-service:latest}")
case "$user" in ""|root|0|0:*) fail "the image runs as root ($user)";; esac

step "compose up (postgres, migrate, seed, app) on port $PORT"
compose up -d || fail "compose up"
app=$(compose ps -q app)
for _ in $(seq 150); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$app" 2>/dev/null || echo none)
  [ "$health" = healthy ] && break
  sleep 2
done
[ "$health" = healthy ] || fail "the service is $health, not healthy"
step "healthy"

body=$(curl -sS -w ' %{http_code}' "http://127.0.0.1:$PORT/user/1")
[[ "$body" == *'"id":1,'*' 200' ]] || fail "GET /user/1: $body"
email="docker-$$@example.com"
status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
  -d '{"text":"from the test"}' "http://127.0.0.1:$PORT/user?email=$email")
[ "$status" = 200 ] || fail "POST /user: $status"
body=$(curl -sS -w ' %{http_code}' "http://127.0.0.1:$PORT/user?email=$email")
[ "$body" = '["from the test"] 200' ] || fail "GET /user?email: $body"
step "GET /user/1, POST then GET: ok"

# A host reboot, as Docker sees it: the engine restarts under the running deployment. Every
# container stops with it; the restart policies alone must bring PostgreSQL and the service
# back (no compose command runs), with the data written before. Other containers on this engine
# stop too (those without a restart policy stay stopped).
others=$(docker ps --format '{{.Names}}' | grep -v "^${COMPOSE_PROJECT_NAME}[-_]" || true)
[ -z "$others" ] || step "warning: the engine restart also stops: $(echo "$others" | tr '\n' ' ')"
restart_email="restart-$$@example.com"
restart_text="written before the engine restart $$ $(date +%s%N)"
status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
  -d "{\"text\":\"$restart_text\"}" "http://127.0.0.1:$PORT/user?email=$restart_email")
[ "$status" = 200 ] || fail "POST /user before the engine restart: $status"
app_started=$(docker inspect -f '{{.State.StartedAt}}' "$app")
postgres=$(compose ps -q postgres)
step "restarting the Docker engine"
started=$(date +%s)
docker_engine_restart || fail "restarting the Docker engine"
step "engine back after $(( $(date +%s) - started )) s; waiting for GET /user/1 (at most 180 s)"
deadline=$((SECONDS + 180))
until body=$(curl -sS -m 5 -w ' %{http_code}' "http://127.0.0.1:$PORT/user/1" 2>&1) &&
    [[ "$body" == *'"id":1,'*' 200' ]]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    states=""
    for id in "$postgres" "$app"; do
      states+=" $(docker inspect -f '{{.Name}} {{.State.Status}} (exit {{.State.ExitCode}}, restart policy "{{.HostConfig.RestartPolicy.Name}}")' "$id" 2>/dev/null || echo "$id gone");"
    done
    ready=$(curl -sS -m 5 -w ' %{http_code}' "http://127.0.0.1:$PORT/readyz" 2>&1 || true)
    fail "not served again 180 s after the engine restart: GET /user/1: $body; /readyz: $ready;$states"
  fi
  sleep 1
done
step "GET /user/1 served again $(( $(date +%s) - started )) s after the engine restart began"
[ "$(docker inspect -f '{{.State.StartedAt}}' "$app")" != "$app_started" ] ||
  fail "the service's container did not restart with the engine (live-restore?)"
body=$(curl -sS -w ' %{http_code}' "http://127.0.0.1:$PORT/user?email=$restart_email")
[ "$body" = "[\"$restart_text\"] 200" ] || fail "the record written before the restart: $body"
step "after the engine restart: served by itself, with the data written before"

started=$(date +%s%N)
docker stop "$app" >/dev/null
took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
code=$(docker inspect -f '{{.State.ExitCode}}' "$app")
step "docker stop: exit $code after $took_ms ms"
[ "$code" = 0 ] || fail "exit status $code after SIGTERM"
[ "$took_ms" -lt 10000 ] || fail "took $took_ms ms, past the 10 s shutdown deadline"

volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
compose down -v --remove-orphans >/dev/null
left=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
{ [ -n "$volumes" ] && [ -z "$left" ]; } || fail "volumes not removed: before [$volumes], after [$left]"
trap - EXIT
step "PASS"
