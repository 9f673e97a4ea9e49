# shellcheck shell=bash
# Sourced by the test scripts that start the service themselves (test-monitoring.sh,
# test-stack.sh, test-scale.sh).

# A free TCP port on 127.0.0.1, chosen by the kernel (not a random guess in the ephemeral range).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until URL answers 200 or DEADLINE_S passes; fails early when process PID is gone.
wait_200() { # url deadline_s pid
  local deadline=$((SECONDS + $2)) code
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)
    [ "$code" = 200 ] && return 0
    kill -0 "$3" 2>/dev/null || { echo "process $3 exited" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "last answer: $code" >&2; return 1; }
    sleep 0.1 # poll interval
  done
}
