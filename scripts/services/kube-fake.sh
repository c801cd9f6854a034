#!/usr/bin/env bash
# A fake Kubernetes API server for tests (tests/kubefake: the REST API, a scheduler, the Job /
# Deployment / TTL / GC controllers and a kubelet that runs containers' commands as local
# processes), on 127.0.0.1 and a free port.
#   kube-fake.sh install          check that the test interpreter has what it needs
#   kube-fake.sh start STATE_DIR  start it; reads STATE_DIR/nodes.json, images.json and
#                                 rbac.json when present; writes STATE_DIR/kubeconfig,
#                                 STATE_DIR/kube.env (KUBECONFIG) and STATE_DIR/kube-fake.pid
#   kube-fake.sh stop STATE_DIR   stop it by pid, and kill every container process it started
# KUBE_FAKE_WATCH_HISTORY (changes kept per type, default 500) and KUBE_FAKE_BACKOFF_SECONDS
# (first restart back-off, default 1) tune it; run from any directory.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=kube-fake
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Nothing to install beyond the test extra: check that it is there, without importing it.
do_install() {
  "${PYTHON:-python3}" -c '
import importlib.util, sys
missing = [m for m in ("kubernetes", "kubernetes_validate", "jsonpatch", "starlette", "uvicorn",
                       "cryptography", "psutil", "yaml") if importlib.util.find_spec(m) is None]
sys.exit("kube-fake needs " + ", ".join(missing) + ": pip install -e .[dev]" if missing else 0)'
}

kube_ready() {
  [ -f "$1/kubeconfig" ] && "${PYTHON:-python3}" -c '
import ssl, sys, urllib.request, yaml
config = yaml.safe_load(open(sys.argv[1] + "/kubeconfig"))
server = config["clusters"][0]["cluster"]["server"]
context = ssl.create_default_context(cafile=sys.argv[1] + "/ca.crt")
urllib.request.urlopen(server + "/readyz", timeout=1, context=context).read()' "$1"
}

do_start() {
  local state_dir=$1
  mkdir -p "$state_dir"
  state_dir=$(cd "$state_dir" && pwd)
  do_stop "$state_dir"
  rm -f "$state_dir/kubeconfig" "$state_dir/kube.env"
  # Its own session, so stop can end it and nothing else; containers get sessions of their own.
  (cd "$REPO_ROOT" && exec setsid "${PYTHON:-python3}" -m tests.kubefake --state-dir "$state_dir" \
      >>"$state_dir/$NAME.log" 2>&1 </dev/null) &
  echo $! >"$state_dir/$NAME.pid"
  if ! wait_until 30 kube_ready "$state_dir"; then
    tail -n 30 "$state_dir/$NAME.log" >&2 || true
    do_stop "$state_dir"
    return 1
  fi
  echo "KUBECONFIG=$state_dir/kubeconfig" >"$state_dir/kube.env"
}

# Container processes run in sessions of their own: the fake lists their process groups in
# kubelet-pids.json; whatever is left after the server stopped is killed from that list.
do_stop() {
  local state_dir=$1
  stop_pidfile "$state_dir/$NAME.pid"
  if [ -f "$state_dir/kubelet-pids.json" ]; then
    "${PYTHON:-python3}" -c '
import json, os, signal, sys
for pgid in json.load(open(sys.argv[1])):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass' "$state_dir/kubelet-pids.json" 2>/dev/null || true
    rm -f "$state_dir/kubelet-pids.json"
  fi
}

service_main "$@"
