#!/usr/bin/env bash
# PostgreSQL for tests: a throw-away cluster on 127.0.0.1 and a free port.
#   postgres.sh install          install Debian postgresql-15 when missing
#   postgres.sh start STATE_DIR  initdb + start; role and database `mlyard` with a generated
#                                password; writes STATE_DIR/postgres.env and postgres.pid
#   postgres.sh stop STATE_DIR   fast shutdown, then remove the cluster
# Durability is off (fsync, synchronous_commit, full_page_writes): the data is thrown away.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=postgres

pg_bin_dir() {
  local dir
  for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  done
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return 0
  fi
  echo "postgres.sh: no PostgreSQL server binaries found; run '$0 install'" >&2
  return 1
}

# initdb refuses to run as root: as root, run the server tools as the `postgres` user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_dir_of() { cat "$1/$NAME.cluster" 2>/dev/null || true; }

do_install() {
  if ! pg_bin_dir >/dev/null 2>&1; then apt_install postgresql-15; fi
  pg_bin_dir >/dev/null
}

# EXIT trap of a failed start (set -e ends the script there): show the log, undo everything.
start_failed() {
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  [ -f "$2" ] && tail -n 20 "$2" >&2
  do_stop "$1" || true
  exit "$rc"
}

do_start() {
  local state_dir=$1 bin cluster data socket port password log
  mkdir -p "$state_dir"
  state_dir=$(cd "$state_dir" && pwd)
  bin=$(pg_bin_dir)
  # pytest's temporary directories may be root-owned 0700, out of reach of `postgres`: keep the
  # cluster in a directory of its own and record where, so `stop` can remove it.
  cluster=$(mktemp -d /tmp/mlyard-postgres.XXXXXXXX)
  echo "$cluster" >"$state_dir/$NAME.cluster"
  data=$cluster/data
  socket=$cluster/socket
  log=$cluster/postgres.log
  mkdir -p "$socket"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$cluster"; fi
  chmod 700 "$cluster"
  # If anything below fails, leave nothing running or on disk: the caller never calls `stop`.
  trap "start_failed $(printf %q "$state_dir") $(printf %q "$log")" EXIT
  cd "$cluster"  # the server tools must be able to read their working directory

  password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
  # The socket lives inside the 0700 cluster directory, so local "trust" admits only its owner
  # (and root); TCP clients need the password.
  as_pg "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$cluster/initdb.log" 2>&1
  # Another process may take the free port before the server binds it: retry with a new one.
  local attempt options
  for attempt in 1 2 3; do
    port=$(free_port)
    options="-c listen_addresses=127.0.0.1 -p $port -k $socket"
    options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "$options" start >/dev/null; then
      break
    fi
    [ "$attempt" -lt 3 ] || return 1
  done
  head -n 1 "$data/postmaster.pid" >"$state_dir/$NAME.pid"
  wait_until 30 as_pg "$bin/pg_isready" -q -h "$socket" -p "$port"

  as_pg "$bin/psql" -q -X -v ON_ERROR_STOP=1 -h "$socket" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE mlyard LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE mlyard OWNER mlyard" >/dev/null

  local env_file=$state_dir/$NAME.env
  cat >"$env_file.tmp" <<EOF
DATABASE_URL=postgresql+psycopg://mlyard:$password@127.0.0.1:$port/mlyard
PGHOST=127.0.0.1
PGPORT=$port
PGUSER=mlyard
PGPASSWORD=$password
PGDATABASE=mlyard
EOF
  chmod 600 "$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
  trap - EXIT
}

do_stop() {
  local state_dir=$1 cluster bin
  cluster=$(cluster_dir_of "$state_dir")
  if [ -n "$cluster" ] && [ -f "$cluster/data/postmaster.pid" ] && bin=$(pg_bin_dir 2>/dev/null); then
    (cd "$cluster" && as_pg "$bin/pg_ctl" -D "$cluster/data" -m fast -w -t 30 stop >/dev/null 2>&1) || true
  fi
  stop_pidfile "$state_dir/$NAME.pid"  # in case pg_ctl could not stop it
  case "$cluster" in
    /tmp/mlyard-postgres.*) rm -rf "$cluster" ;;  # only ever a directory `start` created
  esac
  rm -f "$state_dir/$NAME.cluster" "$state_dir/$NAME.env"
}

service_main "$@"
