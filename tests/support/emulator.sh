#!/usr/bin/env bash
# The project's KMS emulator (AWS, Alibaba Cloud and Huawei Cloud alias APIs; emulator/, a workspace member)
# on 127.0.0.1, state in memory. Builds nothing: the binary is $EMULATOR_BIN, else
# target/debug/kms-emulator (build it with `cargo build -p kms-emulator`).
#   emulator.sh start [PORT]   default $EMULATOR_PORT or 15060; prints EMULATOR_URL=http://127.0.0.1:PORT
#   emulator.sh stop | restart | status
# Extra emulator flags (e.g. --credentials FILE, --huawei-alias-prefix optional): $EMULATOR_ARGS.
# Admin API: $EMULATOR_URL/_emulator/{health,state,keys,aliases,faults,calls,reset} (tests/sdk/README.md).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

EDIR="$RUN/emulator"
PIDFILE="$EDIR/emulator.pid"
BIN="${EMULATOR_BIN:-$ROOT/target/debug/kms-emulator}"
PATTERN="kms-emulator"

running_pid() { pid_running "$PIDFILE" "$PATTERN"; }

start() {
  local port=${1:-${EMULATOR_PORT:-15060}} pid
  port=${port##*:}
  if pid=$(running_pid); then
    [[ $(cat "$EDIR/port" 2>/dev/null) == "$port" ]] ||
      die "emulator already running (pid $pid) on port $(cat "$EDIR/port" 2>/dev/null); stop it first"
    echo "EMULATOR_URL=http://127.0.0.1:$port"
    return 0
  fi
  [[ -x $BIN ]] || die "no emulator binary at $BIN (cargo build -p kms-emulator, or set EMULATOR_BIN)"
  wait_port_free 127.0.0.1 "$port" 5 || die "cannot start the emulator"
  mkdir -p "$EDIR"
  echo "$port" >"$EDIR/port"
  # shellcheck disable=SC2086 # EMULATOR_ARGS is a list of flags
  spawn_bg "$PIDFILE" "$EDIR/emulator.log" "$BIN" --listen "127.0.0.1:$port" ${EMULATOR_ARGS:-}
  local deadline=$((SECONDS + ${EMULATOR_START_TIMEOUT:-20}))
  until port_open 127.0.0.1 "$port"; do
    running_pid >/dev/null || { tail_log "$EDIR/emulator.log"; rm -f "$PIDFILE"; die "emulator exited during startup"; }
    ((SECONDS < deadline)) || { tail_log "$EDIR/emulator.log"; die "emulator not listening after ${EMULATOR_START_TIMEOUT:-20}s"; }
    sleep 0.1
  done
  echo "EMULATOR_URL=http://127.0.0.1:$port"
}

stop() { stop_pid_file "$PIDFILE" "$PATTERN" 10; }

status() {
  local pid
  if pid=$(running_pid); then echo "emulator running, pid $pid, EMULATOR_URL=http://127.0.0.1:$(cat "$EDIR/port")"
  else echo "emulator stopped"; return 1; fi
}

cmd=${1:-}; shift || true
case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  restart) stop; start "${1:-$(cat "$EDIR/port" 2>/dev/null || echo "${EMULATOR_PORT:-15060}")}" ;;
  status) status ;;
  *) echo "usage: $0 start [PORT] | stop | restart [PORT] | status" >&2; exit 2 ;;
esac
