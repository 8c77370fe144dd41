#!/usr/bin/env bash
# The main job on one machine: real Kafka (KRaft), the KMS emulator for AWS, Alibaba Cloud and Huawei
# Cloud, and the daemon converging sample aliases from config/local.toml.
#   local-stack.sh up     install (cached), start everything, publish samples, wait for convergence
#   local-stack.sh down   stop the daemon, the emulator and Kafka (by PID)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LDIR="$RUN/local"
PIDFILE="$LDIR/aliassync.pid"
CONFIG="$ROOT/config/local.toml"
EMU=http://127.0.0.1:15060
HW_PROJECT=0123456789abcdef0123456789abcdef
export LOCAL_AWS_ACCESS_KEY_ID=AKIDEXAMPLE LOCAL_AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
export LOCAL_ALI_ACCESS_KEY_ID=LTAI5tFakeAccessKeyId01 LOCAL_ALI_SECRET_ACCESS_KEY=FakeAccessKeySecret0123456789abcd
export LOCAL_HW_ACCESS_KEY_ID=HPUAFAKEACCESSKEY0001 LOCAL_HW_SECRET_ACCESS_KEY=FakeSecretKey0123456789abcdefghijklmnopq

aliassync() { "$ROOT/target/debug/aliassync" --config "$CONFIG" "$@"; }

key() { # CLOUD SCOPE-FIELD SCOPE REGION → a new key id
  curl -fsS -X POST "$EMU/_emulator/keys" -H 'content-type: application/json' \
    -d "{\"cloud\":\"$1\",\"$2\":\"$3\",\"region\":\"$4\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key_id"])'
}

up() {
  "$SUPPORT/install-kafka.sh"
  (cd "$ROOT" && cargo build --quiet --workspace --bins)
  "$SUPPORT/kafka.sh" start 19092 >/dev/null
  "$SUPPORT/emulator.sh" start 15060 >/dev/null
  "$SUPPORT/kafka.sh" run org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:19092 --create \
    --if-not-exists --topic kms-alias-desired --partitions 3 --config cleanup.policy=compact >/dev/null
  mkdir -p "$LDIR"
  # Sample desired state: 5 aliases in 4 targets, keys made in the emulator.
  {
    echo "aliases:"
    for svc in payments ledger search mail audit; do
      echo "  alias/app/$svc:"
      echo "    aws-use1: $(key aws access_key_id AKIDEXAMPLE us-east-1)"
      echo "    aws-euw1: $(key aws access_key_id AKIDEXAMPLE eu-west-1)"
      echo "    ali-hz: $(key alibaba access_key_id LTAI5tFakeAccessKeyId01 cn-hangzhou)"
      echo "    hw-bj4: $(key huawei project $HW_PROJECT cn-north-4)"
    done
  } >"$LDIR/desired.yaml"
  aliassync publish "$LDIR/desired.yaml"
  if ! pid_running "$PIDFILE" aliassync >/dev/null; then
    setsid nohup "$ROOT/target/debug/aliassync" run --config "$CONFIG" >"$LDIR/aliassync.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  fi
  local deadline=$((SECONDS + 60))
  until curl -fsS http://127.0.0.1:9464/readyz >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "daemon not ready; see $LDIR/aliassync.log"
    sleep 0.5
  done
  until aliassync plan >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { aliassync plan; die "not converged; see $LDIR/aliassync.log"; }
    sleep 1
  done
  aliassync plan
  cat <<MSG

local stack up: every sample alias is in sync in 4 targets (2 AWS regions, Alibaba, Huawei; emulated).
  metrics  http://127.0.0.1:9464/metrics
  status   http://127.0.0.1:9464/status
  emulator $EMU/_emulator/state
  logs     $LDIR/aliassync.log
  try      change $LDIR/desired.yaml, then: target/debug/aliassync --config config/local.toml publish $LDIR/desired.yaml
  stop     bash tests/support/local-stack.sh down
MSG
}

down() {
  stop_pid_file "$PIDFILE" aliassync || true
  "$SUPPORT/emulator.sh" stop || true
  "$SUPPORT/kafka.sh" stop || true
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up | down" >&2; exit 2 ;;
esac
