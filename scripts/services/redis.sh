#!/usr/bin/env bash
# Redis for tests (Streams with consumer groups), on 127.0.0.1 and a free port, no persistence.
#   redis.sh install          install Debian redis-server when missing
#   redis.sh start STATE_DIR  start a daemonized redis-server; writes STATE_DIR/redis.env
#                             (REDIS_URL) and STATE_DIR/redis.pid
#   redis.sh stop STATE_DIR   stop it by pid
# REDIS_PORT, when set, is used instead of a free port (tests that restart the broker).
# Protected mode stays on and the bind is loopback only, so no password is needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=redis

do_install() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  command -v redis-server >/dev/null
}

redis_ready() {
  "${PYTHON:-python3}" -c '
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' "$1"
}

do_start() {
  local state_dir=$1 port attempt
  mkdir -p "$state_dir/data"
  state_dir=$(cd "$state_dir" && pwd)
  # Another process may take the free port before redis binds it: retry with a new one.
  for attempt in 1 2 3; do
    port=${REDIS_PORT:-$(free_port)}
    if redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
        --dir "$state_dir/data" --pidfile "$state_dir/$NAME.pid" \
        --logfile "$state_dir/$NAME.log" --save '' --appendonly no >/dev/null \
        && wait_until 10 redis_ready "$port"; then
      echo "REDIS_URL=redis://127.0.0.1:$port/0" >"$state_dir/$NAME.env"
      return 0
    fi
    do_stop "$state_dir"
  done
  tail -n 20 "$state_dir/$NAME.log" >&2 || true
  return 1
}

# The pidfile exists once start returned: redis writes it before it answers PING.
do_stop() { stop_pidfile "$1/$NAME.pid"; }

service_main "$@"
