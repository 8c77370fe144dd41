# shellcheck shell=bash
# Sourced by the rig's Kafka scripts (kafka.sh, kafka-sasl.sh, kafka-tls.sh) as `source kafka-common.sh DIR`: what
# their single-node KRaft brokers (combined broker+controller on 127.0.0.1) share. Each runs kafka.Kafka from the
# jars of install-kafka.sh, with its own ports, and its data, logs, server.properties and pid file in $RUN/DIR.
# The sourcing script sets KNAME, how messages name its broker ("Kafka", "SASL Kafka", …).
#   KDIR     $RUN/DIR
#   PROPS    its server.properties
#   PIDFILE  the broker's pid
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# shellcheck disable=SC2034 # used by the scripts that source this file
KDIR="$RUN/$1"
PIDFILE="$KDIR/kafka.pid"
PROPS="$KDIR/server.properties"
PATTERN="kafka.Kafka $PROPS"   # what the broker's command line must contain (pid-recycling guard)

load_install() {
  [[ -f $CACHE/kafka.env ]] || "$SUPPORT/install-kafka.sh"
  # shellcheck disable=SC1091
  source "$CACHE/kafka.env"
  [[ -f $KAFKA_HOME/.installed ]] || die "Kafka install at $KAFKA_HOME is incomplete; run install-kafka.sh"
}

java_cli() { # CLASS ARGS... with the quiet tools logging config
  load_install
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2-tools.xml" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

# new_password: a random password, for the secrets a broker script generates.
new_password() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }

running_pid() { pid_running "$PIDFILE" "$PATTERN"; }

# running_on PORT: true if the broker is running, on PORT; running on another port is an error.
running_on() {
  local pid
  pid=$(running_pid) || return 1
  [[ $(cat "$KDIR/port" 2>/dev/null) == "$1" ]] ||
    die "$KNAME already running (pid $pid) on port $(cat "$KDIR/port" 2>/dev/null); stop it first"
}

# claim_ports PORT CONTROLLER_PORT: the install is there, both ports are free, $KDIR/logs exists.
claim_ports() {
  local p
  load_install
  for p in "$1" "$2"; do wait_port_free 127.0.0.1 "$p" 5 || die "cannot start $KNAME"; done
  mkdir -p "$KDIR/logs"
}

# listener_props PORT CONTROLLER_PORT PROTOCOL: server.properties lines for one node that is broker and controller,
# its client (and inter-broker) listener PROTOCOL on PORT, the controller's PLAINTEXT on CONTROLLER_PORT.
listener_props() {
  cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$2
listeners=$3://127.0.0.1:$1,CONTROLLER://127.0.0.1:$2
advertised.listeners=$3://127.0.0.1:$1
listener.security.protocol.map=$3:$3,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=$3
EOF
}

# topic_props: server.properties lines for the data in $KDIR/data, one replica of everything and no topic unless
# a test creates it.
topic_props() {
  cat <<EOF
log.dirs=$KDIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# Internal topics: one replica; few partitions, so the first group/transaction use is quick.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
}

# node_props NETWORK_THREADS: server.properties lines for the broker's session and threads.
node_props() {
  cat <<EOF
# After a crash (kill -9) the controller refuses the restarted broker until the old registration's
# session expires (default 9 s); 5 s keeps crash tests quick with slack for a busy machine.
broker.session.timeout.ms=5000
broker.heartbeat.interval.ms=500
# Small machine (2 cores): few threads.
num.network.threads=$1
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
EOF
}

# format_storage [ARGS...]: give $KDIR/data a new cluster id for $PROPS unless it has one; ARGS go to
# `kafka-storage format` (e.g. --add-scram).
# shellcheck disable=SC2120 # the ARGS are optional
format_storage() {
  local cluster
  [[ ! -f $KDIR/data/meta.properties ]] || return 0
  cluster=$(java_cli kafka.tools.StorageTool random-uuid)
  java_cli kafka.tools.StorageTool format --standalone -t "$cluster" -c "$PROPS" "$@" \
    >"$KDIR/logs/format.log" 2>&1 || { tail_log "$KDIR/logs/format.log"; die "$KNAME storage format failed"; }
}

# fresh_logs: a new server.log (the previous one kept as server.log.1) and kafka.out. A fresh server.log per start:
# readiness is read from it (server_started).
fresh_logs() {
  [[ ! -f $KDIR/logs/server.log ]] || mv -f "$KDIR/logs/server.log" "$KDIR/logs/server.log.1"
  : >"$KDIR/logs/kafka.out"
}

# server_started: this start's server.log says the server started.
server_started() { grep -q "Kafka Server started" "$KDIR/logs/server.log" 2>/dev/null; }

# launch_broker JVM_OPTIONS...: kafka.Kafka $PROPS in the background, its output appended to $KDIR/logs/kafka.out.
# JVM_OPTIONS: heap and garbage collector; the C1-only JIT starts faster and leaves CPU to the tests on 2 cores.
launch_broker() {
  spawn_bg "$PIDFILE" "$KDIR/logs/kafka.out" java "$@" -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dkafka.logs.dir="$KDIR/logs" \
    -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2-server.xml" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$PROPS"
}

# await_ready TIMEOUT PROBE...: wait until the command PROBE... succeeds; fail, showing the logs, if the broker
# exits first or TIMEOUT seconds pass.
await_ready() {
  local timeout=$1 deadline
  shift
  deadline=$((SECONDS + timeout))
  until "$@"; do
    if ! running_pid >/dev/null; then
      tail_log "$KDIR/logs/kafka.out"; tail_log "$KDIR/logs/server.log"
      rm -f "$PIDFILE"; die "$KNAME exited during startup (logs in $KDIR/logs)"
    fi
    ((SECONDS < deadline)) || { tail_log "$KDIR/logs/server.log"; die "$KNAME not ready after ${timeout}s"; }
    sleep 0.25
  done
}

# publish_env NAME=VALUE...: $KDIR/env becomes these as `export NAME=VALUE` lines (replaced whole), and is printed.
publish_env() {
  printf 'export %s\n' "$@" >"$KDIR/env.tmp"
  mv "$KDIR/env.tmp" "$KDIR/env"
  cat "$KDIR/env"
}

stop_broker() { stop_pid_file "$PIDFILE" "$PATTERN" "${KAFKA_STOP_TIMEOUT:-20}"; }

# broker_status LABEL VARIABLE: "LABEL running, pid N, VARIABLE=127.0.0.1:PORT", or "LABEL stopped" and failure.
broker_status() {
  local pid
  if pid=$(running_pid); then echo "$1 running, pid $pid, $2=127.0.0.1:$(cat "$KDIR/port")"
  else echo "$1 stopped"; return 1; fi
}

# ----- the brokers beside the rig's (kafka-sasl.sh, kafka-tls.sh) -----
# They are only started, stopped and asked for their status, and their readiness is read from server.log. Such a
# script defines
#   prepare PORT CONTROLLER_PORT   its secrets and $PROPS (side_props); may remove $KDIR/data, which is then
#                                  formatted again, and set FORMAT_ARGS (more arguments for `kafka-storage format`)
#   ready PORT                     the probe: the broker is ready for the tests
#   write_env PORT                 $KDIR/env, through publish_env
# and a start that calls start_side; it ends with `side_main STATUS_LABEL VARIABLE "$@"`.

# side_props FILE DESCRIPTION PORT CONTROLLER_PORT PROTOCOL < LISTENER_LINES: write the server.properties of such a
# broker; the lines on standard input set up its listener's security.
side_props() {
  {
    echo "# Generated by tests/support/$(basename "$0"): single-node KRaft, $2. Do not edit."
    listener_props "$3" "$4" "$5"
    cat
    topic_props
    node_props 1
    echo "log.cleaner.enable=false"
  } >"$1"
}

# start_side PORT CONTROLLER_PORT HEAP_OPTS: start such a broker (CONTROLLER_PORT empty: PORT+1) unless it already
# runs on PORT, then write and print its env.
start_side() {
  local port=$1 cport=${2:-$(($1 + 1))} heap=$3
  if running_on "$port"; then
    write_env "$port"
    return 0
  fi
  claim_ports "$port" "$cport"
  chmod 0700 "$KDIR"
  FORMAT_ARGS=()
  prepare "$port" "$cport"
  echo "$port" >"$KDIR/port"
  format_storage "${FORMAT_ARGS[@]}"
  fresh_logs
  # shellcheck disable=SC2086
  launch_broker $heap -XX:+UseSerialGC
  await_ready "${KAFKA_START_TIMEOUT:-90}" ready "$port"
  write_env "$port"
}

# side_main STATUS_LABEL VARIABLE COMMAND: the command line of such a broker; stopping also removes $KDIR/env.
side_main() {
  case ${3:-} in
    start) start ;;
    stop) stop_broker; rm -f "$KDIR/env" ;;
    status) broker_status "$1" "$2" ;;
    *) echo "usage: $0 start | stop | status" >&2; exit 2 ;;
  esac
}
