#!/usr/bin/env bash
# The Docker deployment, walked end to end (run by .ci/run; not part of `make test`, which stays
# Docker-free): build the image, bring up docker/docker-compose.yml (PostgreSQL, migrate, seed,
# the service), wait until the service's health check passes, then check
#   - the runtime image is at most 120 MB and runs as a non-root user;
#   - GET /user/1 answers the seeded record; a POST then a GET of the same email;
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
image=$(compose config | awk '/image: records-service/ {print $2; exit}')
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
