# shellcheck shell=bash
# Sourced by scripts/bench.sh, bench-http.sh and bench-syscalls.sh (after they define `log`
# and `die`): the server and load generator being measured, stopped however the script ends, so
# no run leaves a process behind (set SERVER_PID / LOAD_PID right after starting each); and
# start_system, which starts one of the compared systems.

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
  if [ -n "$LOAD_PID" ]; then kill -TERM "$LOAD_PID" 2>/dev/null || true; fi
  LOAD_PID=""
}
trap 'stop_load; stop_server' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Starts one system on 127.0.0.1:PORT, its output in LOG, and waits until GET /user/1 answers
# 200 (60 s at most). Reads OURS_BIN, BASE_BIN, AXUM_BIN, XITCA_BIN, XITCA_PLAIN_BIN, VENV and
# NPROC for the systems that need them, and BENCH_AUTH_SECRET and BENCH_AUTH_HEADER for
# ours-auth; `die` must be defined.
start_system() { # system port log
  local sys=$1 port=$2 logf=$3
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null; then
    die "port $port is already in use"
  fi
  case $sys in
    ours)   SERVER_HOST=127.0.0.1 SERVER_PORT=$port WORKERS=$NPROC "$OURS_BIN" >"$logf" 2>&1 & ;;
    ours-1) SERVER_HOST=127.0.0.1 SERVER_PORT=$port WORKERS=1 "$OURS_BIN" >"$logf" 2>&1 & ;;
    ours-nometrics)
      METRICS=off SERVER_HOST=127.0.0.1 SERVER_PORT=$port WORKERS=$NPROC "$OURS_BIN" >"$logf" 2>&1 & ;;
    ours-access)
      ACCESS_LOG=all SERVER_HOST=127.0.0.1 SERVER_PORT=$port WORKERS=$NPROC "$OURS_BIN" >"$logf" 2>&1 & ;;
    ours-auth)
      AUTH_REQUIRED=all AUTH_JWT_SECRET=$BENCH_AUTH_SECRET SERVER_HOST=127.0.0.1 SERVER_PORT=$port \
        WORKERS=$NPROC "$OURS_BIN" >"$logf" 2>&1 & ;;
    ours-base) SERVER_HOST=127.0.0.1 SERVER_PORT=$port WORKERS=$NPROC "$BASE_BIN" >"$logf" 2>&1 & ;;
    axum)   HOST=127.0.0.1 PORT=$port "$AXUM_BIN" >"$logf" 2>&1 & ;;
    xitca)  XITCA_IO_URING=1 HOST=127.0.0.1 PORT=$port WORKERS=$NPROC "$XITCA_BIN" >"$logf" 2>&1 & ;;
    xitca-epoll)
      XITCA_IO_URING=0 HOST=127.0.0.1 PORT=$port WORKERS=$NPROC "$XITCA_BIN" >"$logf" 2>&1 & ;;
    xitca-plain) HOST=127.0.0.1 PORT=$port WORKERS=$NPROC "$XITCA_PLAIN_BIN" >"$logf" 2>&1 & ;;
    fastapi)
      "$VENV/bin/uvicorn" app:app --app-dir benches/compare/fastapi --host 127.0.0.1 --port "$port" \
        --workers 1 --no-access-log --log-level warning >"$logf" 2>&1 & ;;
  esac
  SERVER_PID=$!
  local code auth=()
  [ "$sys" = ours-auth ] && auth=(-H "$BENCH_AUTH_HEADER")
  for _ in $(seq 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$logf" >&2; die "$sys exited at start (log: $logf)"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${auth[@]}" "http://127.0.0.1:$port/user/1" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  tail -20 "$logf" >&2
  die "$sys did not answer GET /user/1 with 200 within 60 s (last status '$code', log: $logf)"
}

