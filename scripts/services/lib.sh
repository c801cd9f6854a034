# Shared helpers for scripts/services/*.sh. Each service script takes:
#   install          install the service non-interactively (idempotent, fast when present)
#   start STATE_DIR  start it on 127.0.0.1 on a free port, wait until ready, write
#                    STATE_DIR/<name>.env (KEY=VALUE lines for tests) and STATE_DIR/<name>.pid
#   stop STATE_DIR   stop what start started, by PID
set -euo pipefail

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_until SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds or time runs out.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    sleep 0.2
  done
}

# stop_pidfile FILE: stop the process (group) whose pid is in FILE, then remove FILE.
stop_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# service_main "$@": run the calling script's do_install, do_start STATE_DIR or do_stop STATE_DIR.
service_main() {
  case "${1:-}" in
    install) do_install ;;
    start) do_start "${2:?STATE_DIR}" ;;
    stop) do_stop "${2:?STATE_DIR}" ;;
    *) echo "usage: $0 install | start STATE_DIR | stop STATE_DIR" >&2; exit 2 ;;
  esac
}
