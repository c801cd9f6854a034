#!/usr/bin/env bash
# A real MLflow tracking server for tests, on 127.0.0.1 and a free port.
#   mlflow.sh install          pip-install mlflow into $PYTHON's environment when missing
#   mlflow.sh start STATE_DIR  `mlflow server` with a SQLite store and proxied artifacts in
#                              STATE_DIR; waits for /health; writes STATE_DIR/mlflow.env
#                              (MLFLOW_TRACKING_URI=http://127.0.0.1:PORT) and mlflow.pid
#   mlflow.sh stop STATE_DIR   stop the server's process group (MLflow starts uvicorn as a child)
# The server's host check and CORS defaults already admit 127.0.0.1 on any port: no flags needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=mlflow
PY=${PYTHON:-$(command -v python || command -v python3)}

# Telemetry off; no background job runner (LLM judges, trace archival): tests need neither.
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

do_install() {
  local present='import importlib.util as u, sys; sys.exit(u.find_spec("mlflow.server") is None)'
  if ! "$PY" -c "$present" 2>/dev/null; then
    "$PY" -m pip install -q 'mlflow>=3,<4'
  fi
  "$PY" -c "$present"
}

healthy() {
  "$PY" -c 'import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' "$1"
}

# EXIT trap of a failed start (set -e ends the script there): show the log, stop the server.
start_failed() {
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  [ -f "$1/$NAME.log" ] && tail -n 30 "$1/$NAME.log" >&2
  do_stop "$1" || true
  exit "$rc"
}

do_start() {
  local state_dir=$1 port pid attempt
  mkdir -p "$state_dir"
  state_dir=$(cd "$state_dir" && pwd)
  mkdir -p "$state_dir/artifacts"
  trap "start_failed $(printf %q "$state_dir")" EXIT
  # Another process may take the free port before the server binds it: retry with a new one.
  for attempt in 1 2 3; do
    port=$(free_port)
    # setsid: the server and its uvicorn child form one process group that `stop` ends.
    setsid "$PY" -m mlflow server \
      --backend-store-uri "sqlite:///$state_dir/mlflow.db" \
      --artifacts-destination "$state_dir/artifacts" \
      --host 127.0.0.1 --port "$port" --workers 1 \
      </dev/null >"$state_dir/$NAME.log" 2>&1 &
    pid=$!
    echo "$pid" >"$state_dir/$NAME.pid"
    # The first start migrates the new database (5-10 s; more on a busy machine).
    if wait_until 120 healthy "http://127.0.0.1:$port/health"; then break; fi
    stop_group "$state_dir"
    [ "$attempt" -lt 3 ] || return 1
  done
  cat >"$state_dir/$NAME.env.tmp" <<ENV
MLFLOW_TRACKING_URI=http://127.0.0.1:$port
MLFLOW_PORT=$port
MLFLOW_PID=$pid
ENV
  mv "$state_dir/$NAME.env.tmp" "$state_dir/$NAME.env"
  trap - EXIT
}

# stop_group STATE_DIR: SIGTERM the server's process group, SIGKILL what is left after 10 s.
stop_group() {
  local file=$1/$NAME.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

do_stop() {
  stop_group "$1"
  rm -f "$1/$NAME.env"
}

service_main "$@"
