#!/usr/bin/env bash
# A second single-node Kafka (KRaft) with a SASL_PLAINTEXT listener that accepts only SCRAM-SHA-512, for the
# tests of the daemon's Kafka authentication. Same jars as the rig's broker (install-kafka.sh); own ports,
# data and pid file, so it runs beside the rig's plaintext broker.
#   kafka-sasl.sh start     default port 19192 ($KAFKA_SASL_PORT), controller 19193 (PLAINTEXT, loopback)
#   kafka-sasl.sh stop | status
# Users (SCRAM-SHA-512, created at format time with `kafka-storage format --add-scram`):
#   aliassync (the client under test) and admin (inter-broker), both super users, and restricted: ACLs enforced
#   (StandardAuthorizer, deny when no ACL matches) give it READ/WRITE/DESCRIBE on topics and READ/DESCRIBE on
#   groups whose names begin `acl-`, and nothing on the cluster: no CREATE anywhere, as a locked-down production
#   principal. Passwords are random per data dir and written to $RUN/kafka-sasl/*.password (0600). `start` prints
#   and writes $RUN/kafka-sasl/env: KAFKA_SASL_BROKERS, KAFKA_SASL_USER, KAFKA_SASL_PASSWORD_FILE,
#   KAFKA_SASL_RESTRICTED_USER, KAFKA_SASL_RESTRICTED_PASSWORD_FILE.
source "$(dirname "${BASH_SOURCE[0]}")/kafka-common.sh" kafka-sasl
KNAME="SASL Kafka"
USER_NAME=aliassync
RESTRICTED=restricted

write_props() { # $1 = file, $2 = port, $3 = controller port, $4 = admin password
  side_props "$1" "SASL_PLAINTEXT + SCRAM-SHA-512" "$2" "$3" SASL_PLAINTEXT <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$4";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# ANONYMOUS: the PLAINTEXT controller listener (loopback), which the node's own broker uses.
super.users=User:admin;User:$USER_NAME;User:ANONYMOUS
EOF
}

# restricted_acls PORT: the restricted user's ACLs (once per data dir; they live in its metadata log).
restricted_acls() {
  local cfg="$KDIR/admin-client.properties" acl=(org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$1")
  [[ -f $KDIR/data/.aliassync-acls ]] && return 0
  (umask 077 && cat >"$cfg" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(<"$KDIR/admin.password")";
EOF
  )
  acl+=(--command-config "$cfg" --add --allow-principal "User:$RESTRICTED" --resource-pattern-type prefixed)
  if ! { java_cli "${acl[@]}" --topic acl- --operation Read --operation Write --operation Describe &&
    java_cli "${acl[@]}" --group acl- --operation Read --operation Describe; } >"$KDIR/logs/acls.log" 2>&1; then
    tail_log "$KDIR/logs/acls.log"
    die "adding the restricted user's ACLs failed"
  fi
  touch "$KDIR/data/.aliassync-acls"
}

write_env() { # $1 = port
  restricted_acls "$1"
  publish_env "KAFKA_SASL_BROKERS=127.0.0.1:$1" "KAFKA_SASL_USER=$USER_NAME" \
    "KAFKA_SASL_PASSWORD_FILE=$KDIR/$USER_NAME.password" "KAFKA_SASL_RESTRICTED_USER=$RESTRICTED" \
    "KAFKA_SASL_RESTRICTED_PASSWORD_FILE=$KDIR/$RESTRICTED.password"
}

# Ready = the listener accepts connections and the server logged its start (a plaintext Metadata probe
# cannot pass a SASL listener; the tests then wait for the daemon's own readiness).
ready() { port_open 127.0.0.1 "$1" && server_started; }

prepare() { # $1 = port, $2 = controller port
  local admin_pw user_pw
  # Passwords live with the data: a new data dir gets new users and new passwords.
  if [[ ! -f $KDIR/data/meta.properties || ! -s $KDIR/admin.password || ! -s $KDIR/$USER_NAME.password ||
    ! -s $KDIR/$RESTRICTED.password ]] || [[ $(cat "$KDIR/port" 2>/dev/null) != "$1" ]]; then
    rm -rf "$KDIR/data"
    (umask 077 && new_password >"$KDIR/admin.password" && new_password >"$KDIR/$USER_NAME.password" &&
      new_password >"$KDIR/$RESTRICTED.password")
  fi
  admin_pw=$(<"$KDIR/admin.password")
  user_pw=$(<"$KDIR/$USER_NAME.password")
  (umask 077 && write_props "$PROPS" "$1" "$2" "$admin_pw")
  FORMAT_ARGS=(--add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]"
    --add-scram "SCRAM-SHA-512=[name=$USER_NAME,password=$user_pw]"
    --add-scram "SCRAM-SHA-512=[name=$RESTRICTED,password=$(<"$KDIR/$RESTRICTED.password")]")
}

start() {
  start_side "${KAFKA_SASL_PORT:-19192}" "${KAFKA_SASL_CONTROLLER_PORT:-}" "${KAFKA_SASL_HEAP_OPTS:--Xms128m -Xmx384m}"
}

side_main "SASL kafka" KAFKA_SASL_BROKERS "$@"
