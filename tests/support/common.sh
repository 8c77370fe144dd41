# shellcheck shell=bash
# Sourced by the rig scripts in tests/support/. Defines paths and small process helpers.
#   ROOT   project root
#   CACHE  downloads, venv, jars; survives between runs, outside the repo
#   RUN    data dirs, logs, pid files of the running peers
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${ALIASSYNC_CACHE:-$HOME/.cache/aliassync-rig}"
RUN="${ALIASSYNC_RUN:-$ROOT/target/rig}"
# shellcheck disable=SC2034 # used by the scripts that source this file
SUPPORT="$ROOT/tests/support"
mkdir -p "$CACHE" "$RUN"

die() { echo "rig: error: $*" >&2; exit 1; }
note() { echo "rig: $*" >&2; }

# port_open HOST PORT: true if something accepts TCP connections there.
# shellcheck disable=SC2016 # $0/$1 expand in the inner bash
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# wait_for_port HOST PORT TIMEOUT_SECONDS
wait_for_port() {
  local host=$1 port=$2 deadline=$((SECONDS + $3))
  until port_open "$host" "$port"; do
    ((SECONDS < deadline)) || { note "timed out waiting for $host:$port"; return 1; }
    sleep 0.2
  done
}

# wait_port_free HOST PORT TIMEOUT: wait for a listener to go away (e.g. a just-killed server).
wait_port_free() {
  local deadline=$((SECONDS + $3))
  while port_open "$1" "$2"; do
    ((SECONDS < deadline)) || { note "port $1:$2 is already in use"; return 1; }
    sleep 0.2
  done
}

# free_port: print a TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# pid_running FILE PATTERN: print the PID stored in FILE if that process is alive and its
# command line contains PATTERN (guards against a recycled PID); fail otherwise.
pid_running() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
  echo "$pid"
}

# alive PID: the process exists and is not a zombie (an unreaped zombie has exited).
alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# stop_pid_file FILE PATTERN [TIMEOUT]: TERM the process, wait (default 20 s), then KILL;
# remove FILE. A no-op if it is not running.
stop_pid_file() {
  local file=$1 pattern=$2 deadline=$((SECONDS + ${3:-20})) pid
  if pid=$(pid_running "$file" "$pattern"); then
    kill -TERM "$pid" 2>/dev/null || true
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$pid"; then
      note "pid $pid ignored TERM for ${3:-20}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    fi
  fi
  rm -f "$file"
}

# spawn_bg PIDFILE LOGFILE CMD...: run CMD detached (own session, stdin from /dev/null,
# output appended to LOGFILE, so a caller's $(...) or pipe never waits on it) and store the
# PID of CMD itself (the shell execs into it) in PIDFILE.
spawn_bg() {
  local pidfile=$1 log=$2; shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016
  setsid -f bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$log" 2>&1
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $pidfile ]] && return 0; sleep 0.1; done
  die "could not start $1 (see $log)"
}

# tail_log FILE: last lines of a log, for error messages.
tail_log() { if [[ -f $1 ]]; then tail -n "${2:-30}" "$1" | sed 's/^/    /' >&2; fi; }
