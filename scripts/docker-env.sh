# shellcheck shell=bash
# Sourced by scripts/docker-up.sh and scripts/test-docker.sh: a Docker engine that runs, the
# base images (pulled, or built locally by scripts/standin-images.sh where no registry can be
# reached), and COMPOSE: the compose command this machine has.
#   Installs Debian's docker.io (and docker-compose) with apt-get when no engine is found, and
#   starts dockerd in the background when its socket is missing (both need root).
# docker_engine_restart restarts that engine under whatever runs on it (scripts/test-docker.sh).

DOCKERD_LOG=/var/log/records-dockerd.log

# Runs the dockerd command line "$@" in the background, its output appended to DOCKERD_LOG, and
# waits until the engine answers (at most 60 s).
dockerd_start() {
  echo "--- $(date -u +%FT%TZ) $*" >>"$DOCKERD_LOG"
  nohup "$@" >>"$DOCKERD_LOG" 2>&1 &
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "docker: dockerd did not start within 60 s" >&2
      tail -20 "$DOCKERD_LOG" >&2
      return 1
    fi
    sleep 0.5
  done
}

# Restarts the running Docker engine as a host reboot does: every container stops with it, and
# on the way back only the restart policies start them again (no compose command runs). Needs
# live-restore off (Docker's default; with it on, containers would outlive the restart and the
# restart policies would go untested). Under systemd: `systemctl restart docker`. Otherwise (a
# dockerd started by hand, as docker_engine does): SIGTERM to the dockerd of /var/run/docker.pid,
# wait for it to exit (at most 120 s: it first stops each container within its stop grace
# period), and start it again with the same command line, read from /proc. Every other container
# on this engine stops too; those without a restart policy stay stopped.
docker_engine_restart() {
  local live pid deadline cmd=()
  live=$(docker info -f '{{.LiveRestoreEnabled}}') || return 1
  if [ "$live" = true ]; then
    echo "docker: live-restore is on: containers would outlive an engine restart" >&2
    return 1
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q docker 2>/dev/null; then
    systemctl restart docker || return 1
  else
    pid=$(cat /var/run/docker.pid 2>/dev/null || pgrep -xo dockerd || true)
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/cmdline" ]; then
      echo "docker: no running dockerd found (/var/run/docker.pid, pgrep)" >&2
      return 1
    fi
    mapfile -d '' cmd <"/proc/$pid/cmdline"
    echo "docker: restarting dockerd (pid $pid: ${cmd[*]})" >&2
    kill -TERM "$pid"
    deadline=$((SECONDS + 120))
    # Gone, or a zombie (a child of this shell that nothing has waited for yet).
    while [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "docker: dockerd (pid $pid) did not exit within 120 s of SIGTERM" >&2
        return 1
      fi
      sleep 0.5
    done
    dockerd_start "${cmd[@]}" || return 1
  fi
  deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "docker: the engine did not come back" >&2; return 1; }
    sleep 0.5
  done
}

docker_engine() {
  if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    echo "docker: no engine; installing Debian's docker.io" >&2
    apt-get update -qq && apt-get install -y -qq docker.io docker-compose >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "docker: starting dockerd" >&2
    dockerd_start dockerd
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
