#!/usr/bin/env bash
# moto (AWS emulator; the tests use its KMS) on 127.0.0.1, default no-auth mode, state in memory.
#   moto.sh start [PORT]   default $MOTO_PORT or 15055; prints MOTO_URL=http://127.0.0.1:PORT
#   moto.sh stop | restart | status
# Requests must carry a SigV4 Authorization header whose scope names kms (…/REGION/kms/aws4_request):
# moto routes by it (no header = S3). Signatures are not checked.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MDIR="$RUN/moto"
PIDFILE="$MDIR/moto.pid"
VENV="$CACHE/moto-venv"
PATTERN="$VENV/bin/moto_server"

running_pid() { pid_running "$PIDFILE" "$PATTERN"; }

start() {
  local port=${1:-${MOTO_PORT:-15055}} pid
  port=${port##*:}
  if pid=$(running_pid); then
    [[ $(cat "$MDIR/port" 2>/dev/null) == "$port" ]] ||
      die "moto already running (pid $pid) on port $(cat "$MDIR/port" 2>/dev/null); stop it first"
    echo "MOTO_URL=http://127.0.0.1:$port"
    return 0
  fi
  [[ -f $VENV/.installed ]] || "$SUPPORT/install-moto.sh"
  wait_port_free 127.0.0.1 "$port" 5 || die "cannot start moto"
  mkdir -p "$MDIR"
  echo "$port" >"$MDIR/port"
  # Dummy credentials/region so nothing in moto looks for real ones.
  AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=secret AWS_DEFAULT_REGION=us-east-1 \
    spawn_bg "$PIDFILE" "$MDIR/moto.log" "$VENV/bin/python" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
  local deadline=$((SECONDS + ${MOTO_START_TIMEOUT:-30}))
  until port_open 127.0.0.1 "$port"; do
    running_pid >/dev/null || { tail_log "$MDIR/moto.log"; rm -f "$PIDFILE"; die "moto exited during startup"; }
    ((SECONDS < deadline)) || { tail_log "$MDIR/moto.log"; die "moto not listening after ${MOTO_START_TIMEOUT:-30}s"; }
    sleep 0.1
  done
  echo "MOTO_URL=http://127.0.0.1:$port"
}

stop() { stop_pid_file "$PIDFILE" "$PATTERN" 20; }

status() {
  local pid
  if pid=$(running_pid); then echo "moto running, pid $pid, MOTO_URL=http://127.0.0.1:$(cat "$MDIR/port")"
  else echo "moto stopped"; return 1; fi
}

cmd=${1:-}; shift || true
case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  restart) stop; start "${1:-$(cat "$MDIR/port" 2>/dev/null || echo "${MOTO_PORT:-15055}")}" ;;
  status) status ;;
  *) echo "usage: $0 start [PORT] | stop | restart [PORT] | status" >&2; exit 2 ;;
esac
