#!/usr/bin/env bash
# A real sshd on 127.0.0.1 for tests, with its own host key, config and test user.
#   sshd.sh install          install Debian openssh-server (and acl) when missing
#   sshd.sh start STATE_DIR  create the user `mlyardtest` (key login only) with a generated key
#                            pair, start sshd on a free port; writes STATE_DIR/sshd.env with
#                            SSH_HOST, SSH_PORT, SSH_USER, SSH_IDENTITY_FILE, SSH_KNOWN_HOSTS,
#                            SSH_PID, SSH_HOME
#   sshd.sh stop STATE_DIR   stop that sshd (and its sessions) by PID, remove its files and the
#                            test user's home of this start
# The test user may run the Python that runs the tests ($PYTHON): start grants it traverse (x)
# rights, by ACL, on the ancestors of that interpreter it could not enter (e.g. /root).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=sshd
TEST_USER=${MLYARD_SSH_TEST_USER:-mlyardtest}

server_dir_of() { cat "$1/$NAME.server" 2>/dev/null || true; }

do_install() {
  if [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ] || ! command -v setfacl >/dev/null; then
    apt_install openssh-server openssh-sftp-server acl
  fi
  [ -x /usr/sbin/sshd ]
}

start_failed() {
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  local server
  server=$(server_dir_of "$1")
  [ -n "$server" ] && [ -f "$server/sshd.log" ] && tail -n 20 "$server/sshd.log" >&2
  do_stop "$1" || true
  exit "$rc"
}

ensure_test_user() {
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$TEST_USER"
  fi
  # A locked account ('!' in shadow) is refused even for key logins; '*' means "no password".
  usermod -p '*' "$TEST_USER"
}

# grant_traverse PATH: let the test user enter every ancestor directory of PATH.
grant_traverse() {
  local path dir
  path=$(readlink -f "$1")
  dir=$(dirname "$path")
  while [ "$dir" != "/" ]; do
    if ! runuser -u "$TEST_USER" -- test -x "$dir"; then
      setfacl -m "u:$TEST_USER:x" "$dir"
    fi
    dir=$(dirname "$dir")
  done
}

do_start() {
  local state_dir=$1 server port home python
  mkdir -p "$state_dir"
  state_dir=$(cd "$state_dir" && pwd)
  [ -d /run/sshd ] || mkdir -p /run/sshd && chmod 755 /run/sshd
  # StrictModes refuses authorized keys below a world-writable directory such as /tmp: keep the
  # server's files under root-owned /run.
  server=$(mktemp -d /run/mlyard-sshd.XXXXXXXX)
  chmod 755 "$server"
  echo "$server" >"$state_dir/$NAME.server"
  trap "start_failed $(printf %q "$state_dir")" EXIT

  ensure_test_user
  # A fresh home per start, removed by stop: what jobs leave in ~ never piles up.
  home=$server/home
  mkdir -p "$home"
  chown "$TEST_USER:" "$home"
  chmod 755 "$home"
  usermod -d "$home" "$TEST_USER"
  python=${PYTHON:-$(command -v python3)}
  grant_traverse "$python"
  # The venv's site-packages may also live outside the test user's reach.
  grant_traverse "$("$python" -c 'import sys; print(sys.prefix)')/x"
  grant_traverse "$("$python" -c 'import sys; print(sys.base_prefix)')/x"

  ssh-keygen -q -t ed25519 -N '' -C "mlyard-test-host" -f "$server/host_ed25519_key"
  ssh-keygen -q -t ed25519 -N '' -C "mlyard-test-client" -f "$server/client_ed25519_key"
  # StrictModes: authorized keys in a root-owned directory nobody else may write.
  mkdir -p "$server/authorized_keys"
  cp "$server/client_ed25519_key.pub" "$server/authorized_keys/$TEST_USER"
  chmod 644 "$server/authorized_keys/$TEST_USER"

  local attempt
  for attempt in 1 2 3; do
    port=$(free_port)
    cat >"$server/sshd_config" <<EOF
# Written by mlyard scripts/services/sshd.sh for tests.
ListenAddress 127.0.0.1
Port $port
HostKey $server/host_ed25519_key
PidFile $server/sshd.pid
AuthorizedKeysFile $server/authorized_keys/%u
AllowUsers $TEST_USER
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
X11Forwarding no
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 15
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    /usr/sbin/sshd -t -f "$server/sshd_config"
    if /usr/sbin/sshd -f "$server/sshd_config" -E "$server/sshd.log" \
      && wait_until 10 test -s "$server/sshd.pid"; then
      break
    fi
    [ "$attempt" -lt 3 ] || return 1
  done
  cp "$server/sshd.pid" "$state_dir/$NAME.pid"
  wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$server/host_ed25519_key.pub")" >"$server/known_hosts"

  local env_file=$state_dir/$NAME.env
  cat >"$env_file.tmp" <<EOF
SSH_HOST=127.0.0.1
SSH_PORT=$port
SSH_USER=$TEST_USER
SSH_IDENTITY_FILE=$server/client_ed25519_key
SSH_KNOWN_HOSTS=$server/known_hosts
SSH_PID=$(cat "$server/sshd.pid")
SSH_HOME=$home
SSH_LOG=$server/sshd.log
EOF
  mv "$env_file.tmp" "$env_file"
  trap - EXIT
}

do_stop() {
  local state_dir=$1 server pid
  server=$(server_dir_of "$state_dir")
  if [ -f "$state_dir/$NAME.pid" ]; then
    pid=$(cat "$state_dir/$NAME.pid")
    # The listener's per-connection children (sshd sessions) are ours too.
    for child in $(pgrep -P "$pid" 2>/dev/null); do kill "$child" 2>/dev/null || true; done
  fi
  stop_pidfile "$state_dir/$NAME.pid"
  case "$server" in
    /run/mlyard-sshd.*) rm -rf "$server" ;;  # only ever a directory `start` created
  esac
  rm -f "$state_dir/$NAME.server" "$state_dir/$NAME.env"
}

service_main "$@"
