#!/usr/bin/env bash
# NATS with JetStream for tests, on 127.0.0.1 and free ports, storage in STATE_DIR.
#   nats.sh install          install Debian nats-server when missing
#   nats.sh start STATE_DIR  start nats-server -js; writes STATE_DIR/nats.env (NATS_URL) and
#                            STATE_DIR/nats.pid
#   nats.sh stop STATE_DIR   stop it by pid
# NATS_PORT, when set, is used instead of a free port (tests that restart the broker).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=nats

do_install() {
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server
  command -v nats-server >/dev/null
}

jetstream_ready() {
  "${PYTHON:-python3}" -c '
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz?js-enabled-only=true"
with urllib.request.urlopen(url, timeout=1) as response:
    sys.exit(0 if response.status == 200 else 1)' "$1"
}

do_start() {
  local state_dir=$1 port monitor attempt
  mkdir -p "$state_dir/jetstream"
  state_dir=$(cd "$state_dir" && pwd)
  for attempt in 1 2 3; do
    port=${NATS_PORT:-$(free_port)}
    monitor=$(free_port)
    setsid nats-server -a 127.0.0.1 -p "$port" -m "$monitor" -js -sd "$state_dir/jetstream" \
      -P "$state_dir/$NAME.pid" </dev/null >"$state_dir/$NAME.log" 2>&1 &
    echo $! >"$state_dir/$NAME.pid"
    if wait_until 15 jetstream_ready "$monitor"; then
      echo "NATS_URL=nats://127.0.0.1:$port" >"$state_dir/$NAME.env"
      return 0
    fi
    do_stop "$state_dir"
  done
  tail -n 20 "$state_dir/$NAME.log" >&2 || true
  return 1
}

do_stop() { stop_pidfile "$1/$NAME.pid"; }

service_main "$@"
