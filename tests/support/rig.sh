#!/usr/bin/env bash
# The whole test rig: Kafka (KRaft) + moto, both on 127.0.0.1.
#   rig.sh up      install what is missing (cached), start both, write $RUN/env
#   rig.sh down    stop both (by PID)
#   rig.sh status
#   rig.sh kafka-topics ARGS...   org.apache.kafka.tools.TopicCommand against the rig's broker
#                                 (--bootstrap-server added), e.g. rig.sh kafka-topics --list
# Tests: `source target/rig/env` for KAFKA_BROKERS, MOTO_URL, KAFKA_HOME (jars in $KAFKA_HOME/libs).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

up() {
  "$SUPPORT/install-debs.sh"
  "$SUPPORT/install-kafka.sh"
  "$SUPPORT/install-moto.sh"
  local kafka moto
  kafka=$("$SUPPORT/kafka.sh" start "${KAFKA_PORT:-19092}")
  moto=$("$SUPPORT/moto.sh" start "${MOTO_PORT:-15055}")
  # shellcheck disable=SC1091
  source "$CACHE/kafka.env"
  cat >"$RUN/env.tmp" <<EOF2
export ${kafka}
export ${moto}
export KAFKA_HOME=$KAFKA_HOME
export KAFKA_LIBS=$KAFKA_HOME/libs
export KAFKA_VERSION=$KAFKA_VERSION
export ALIASSYNC_RUN=$RUN
EOF2
  mv "$RUN/env.tmp" "$RUN/env"
  printf '%s\n%s\n' "$kafka" "$moto"
}

down() {
  "$SUPPORT/kafka.sh" stop
  "$SUPPORT/moto.sh" stop
  rm -f "$RUN/env"
}

cmd=${1:-}; shift || true
case $cmd in
  up) up ;;
  down) down ;;
  status) rc=0; "$SUPPORT/kafka.sh" status || rc=1; "$SUPPORT/moto.sh" status || rc=1; exit $rc ;;
  kafka-topics)
    "$SUPPORT/kafka.sh" run org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "127.0.0.1:$(cat "$RUN/kafka/port" 2>/dev/null || echo 19092)" "$@" ;;
  *) echo "usage: $0 up | down | status | kafka-topics ARGS..." >&2; exit 2 ;;
esac
