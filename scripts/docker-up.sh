#!/usr/bin/env bash
# `make run-server-docker`: the compose file's PostgreSQL, one-shot migrate and seed, and the
# service on http://localhost:${RECORDS_PORT:-8000}, in the foreground (Ctrl-C stops it).
# Installs and starts a Docker engine if missing, and builds stand-in base images where none can
# be pulled (scripts/standin-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/docker-env.sh
docker_engine
# shellcheck disable=SC2119 # the default base images; this script's arguments are compose's
docker_images
exec "${COMPOSE[@]}" -f docker/docker-compose.yml up --build "$@"
