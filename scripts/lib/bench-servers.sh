# Sourced by scripts/bench.sh, bench-http.sh and bench-syscalls.sh (after they define `log`): the server
# and load generator being measured, stopped however the script ends, so no run leaves a
# process behind. Set SERVER_PID / LOAD_PID right after starting each.

SERVER_PID=""
stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=""
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
LOAD_PID=""
stop_load() {
  [ -n "$LOAD_PID" ] && kill -TERM "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
}
trap 'stop_load; stop_server' EXIT
trap 'log "interrupted"; exit 130' INT TERM
