# shellcheck shell=bash
# Sourced by scripts/docker-up.sh and scripts/test-docker.sh: a Docker engine that runs, the
# base images (pulled, or built locally by scripts/standin-images.sh where no registry can be
# reached), and COMPOSE: the compose command this machine has.
#   Installs Debian's docker.io (and docker-compose) with apt-get when no engine is found, and
#   starts dockerd in the background when its socket is missing (both need root).

docker_engine() {
  if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    echo "docker: no engine; installing Debian's docker.io" >&2
    apt-get update -qq && apt-get install -y -qq docker.io docker-compose >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "docker: starting dockerd" >&2
    nohup dockerd >/var/log/records-dockerd.log 2>&1 &
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "docker: dockerd did not start" >&2; tail -20 /var/log/records-dockerd.log >&2; return 1; }
  fi
  # shellcheck disable=SC2034 # COMPOSE is for the scripts that source this file
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  else
    command -v docker-compose >/dev/null || { apt-get update -qq; apt-get install -y -qq docker-compose >/dev/null; }
    COMPOSE=(docker-compose)
  fi
  # BuildKit needs the buildx plugin with current Docker CLIs; without it, the classic builder
  # (the Dockerfile works with both).
  if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
  fi
}

docker_images() {
  "$(dirname "${BASH_SOURCE[0]}")/standin-images.sh" debian:bookworm-slim rust:1-bookworm postgres:15 "$@"
}
