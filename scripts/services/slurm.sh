#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + munge) for tests, on 127.0.0.1 only.
#   slurm.sh install          install Debian slurmctld, slurmd, slurm-client and munge when missing
#   slurm.sh start STATE_DIR  write /etc/slurm/slurm.conf, start munged, slurmctld -i and slurmd on
#                             free ports, wait until the node is idle; writes STATE_DIR/slurm.env
#   slurm.sh stop STATE_DIR   cancel the cluster's jobs, stop the three daemons by PID, clean up
# SLURM reads its configuration from /etc/slurm/slurm.conf everywhere (also in non-interactive SSH
# sessions of the test user), so only one such cluster can run on a machine at a time; `start`
# refuses when another one is running. There is no slurmdbd: finished jobs are kept by
# `scontrol show job` for MinJobAge seconds and logged by jobcomp/filetxt (`sacct -c`).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=slurm
SLURM_CONF_PATH=/etc/slurm/slurm.conf
PARTITION=mlyard

cluster_dir_of() { cat "$1/$NAME.cluster" 2>/dev/null || true; }

do_install() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    apt_install slurmctld slurmd slurm-client munge
  fi
  command -v slurmctld >/dev/null && command -v munged >/dev/null
}

start_failed() {
  local rc=$?
  [ "$rc" -eq 0 ] && return 0
  local cluster
  cluster=$(cluster_dir_of "$1")
  if [ -n "$cluster" ]; then
    for log in "$cluster"/log/*.log "$cluster"/munge/*.log; do
      [ -f "$log" ] && { echo "== $log" >&2; tail -n 15 "$log" >&2; }
    done
  fi
  do_stop "$1" || true
  exit "$rc"
}

# The node name must resolve, to 127.0.0.1 (SERVICES.md): add it to /etc/hosts when it does not.
ensure_hostname_resolves() {
  local host=$1
  if ! getent hosts "$host" | grep -q '^127\.'; then
    echo "127.0.0.1 $host" >>/etc/hosts
  fi
}

write_config() {
  local cluster=$1 host=$2 ctld_port=$3 slurmd_port=$4 cpus memory_mb
  cpus=$(nproc)
  # Leave some memory to the machine; the scheduler tracks memory (CR_Core_Memory) so that
  # `--mem` requests are checked against what the node has.
  memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  mkdir -p /etc/slurm
  cat >"$SLURM_CONF_PATH.tmp" <<EOF
# Written by mlyard scripts/services/slurm.sh for tests: a one-node cluster on 127.0.0.1.
ClusterName=mlyardtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays the restart of a requeued job (default 120 s): short for tests.
AuthInfo=socket=$cluster/munge/munge.socket,cred_expire=10
StateSaveLocation=$cluster/state
SlurmdSpoolDir=$cluster/spool
SlurmctldPidFile=$cluster/run/slurmctld.pid
SlurmdPidFile=$cluster/run/slurmd.pid
SlurmctldLogFile=$cluster/log/slurmctld.log
SlurmdLogFile=$cluster/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
# Without cgroups, memory limits are enforced by the accounting poller: OUT_OF_MEMORY works.
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$cluster/jobcomp.txt
SchedulerType=sched/backfill
# Test-sized scheduling intervals: requeued and newly eligible jobs start within seconds.
SchedulerParameters=sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mv "$SLURM_CONF_PATH.tmp" "$SLURM_CONF_PATH"
  chmod 644 "$SLURM_CONF_PATH"
}

# pid_alive FILE: the process whose pid FILE holds is running.
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_is_idle() { sinfo -h -p "$PARTITION" -o '%t' 2>/dev/null | grep -qx 'idle'; }

do_start() {
  local state_dir=$1 cluster host ctld_port slurmd_port
  mkdir -p "$state_dir"
  state_dir=$(cd "$state_dir" && pwd)
  if pgrep -x slurmctld >/dev/null 2>&1; then
    echo "slurm.sh: a slurmctld is already running on this machine; SLURM reads the single" \
      "$SLURM_CONF_PATH, so stop the other cluster first" >&2
    return 1
  fi
  # The cluster's files live outside pytest's 0700 directories: munge and the job's user must
  # reach them. Record where, so `stop` can remove it.
  cluster=$(mktemp -d /tmp/mlyard-slurm.XXXXXXXX)
  chmod 755 "$cluster"
  echo "$cluster" >"$state_dir/$NAME.cluster"
  trap "start_failed $(printf %q "$state_dir")" EXIT
  mkdir -p "$cluster"/{state,spool,run,log,munge}
  host=$(hostname -s)
  ensure_hostname_resolves "$host"

  # munge: a key of this cluster's own, its socket inside the cluster directory.
  chown munge:munge "$cluster/munge"
  chmod 755 "$cluster/munge"
  runuser -u munge -- mungekey --create --keyfile="$cluster/munge/munge.key" --force >/dev/null
  runuser -u munge -- munged --key-file="$cluster/munge/munge.key" \
    --socket="$cluster/munge/munge.socket" --pid-file="$cluster/munge/munged.pid" \
    --log-file="$cluster/munge/munged.log" --seed-file="$cluster/munge/munged.seed"
  wait_until 10 test -S "$cluster/munge/munge.socket"
  cp "$cluster/munge/munged.pid" "$state_dir/munged.pid"

  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  write_config "$cluster" "$host" "$ctld_port" "$slurmd_port"
  touch "$cluster/jobcomp.txt"

  slurmctld -i
  wait_until 20 test -s "$cluster/run/slurmctld.pid"
  cp "$cluster/run/slurmctld.pid" "$state_dir/slurmctld.pid"
  wait_until 20 scontrol ping
  slurmd
  wait_until 20 test -s "$cluster/run/slurmd.pid"
  cp "$cluster/run/slurmd.pid" "$state_dir/slurmd.pid"
  wait_until 60 node_is_idle
  # `sacct -c` opens the job completion log for writing even to read it: let job users do so.
  chmod 666 "$cluster/jobcomp.txt"

  local env_file=$state_dir/$NAME.env
  cat >"$env_file.tmp" <<EOF
SLURM_CONF=$SLURM_CONF_PATH
SLURM_PARTITION=$PARTITION
SLURM_NODE=$host
SLURM_CPUS=$(nproc)
SLURM_JOBCOMP_LOG=$cluster/jobcomp.txt
SLURMCTLD_PORT=$ctld_port
EOF
  mv "$env_file.tmp" "$env_file"
  trap - EXIT
}

do_stop() {
  local state_dir=$1 cluster
  cluster=$(cluster_dir_of "$state_dir")
  if [ -f "$state_dir/slurmctld.pid" ]; then
    # Jobs first, so no job step outlives the cluster.
    scancel -p "$PARTITION" >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do
      [ -z "$(squeue -h -p "$PARTITION" 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  if [ -f "$state_dir/slurmctld.pid" ]; then
    # An orderly shutdown of both daemons takes ~1 s; SIGTERM alone takes ~6 s.
    scontrol shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do
      pid_alive "$state_dir/slurmctld.pid" || pid_alive "$state_dir/slurmd.pid" || break
      sleep 0.1
    done
  fi
  stop_pidfile "$state_dir/slurmd.pid"
  stop_pidfile "$state_dir/slurmctld.pid"
  stop_pidfile "$state_dir/munged.pid"
  case "$cluster" in
    /tmp/mlyard-slurm.*) rm -rf "$cluster" ;;  # only ever a directory `start` created
  esac
  rm -f "$state_dir/$NAME.cluster" "$state_dir/$NAME.env"
}

service_main "$@"
