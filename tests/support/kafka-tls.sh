#!/usr/bin/env bash
# A third single-node Kafka (KRaft) whose client listener speaks only TLS (security.protocol=SSL), for the tests
# of the daemon's Kafka TLS settings (tests/e2e_tls.rs). Same jars as the rig's broker (install-kafka.sh); own
# ports, data, certificates and pid file, so it runs beside the rig's plaintext broker and the SASL one.
#   kafka-tls.sh start     default port 19292 ($KAFKA_TLS_PORT), controller 19293 (PLAINTEXT, loopback)
#   kafka-tls.sh stop | status
# Certificates (openssl, in $RUN/kafka-tls/tls/, made once and again when they near expiry):
#   ca.crt          the test CA that signed the broker's certificate (SAN IP:127.0.0.1, DNS:localhost)
#   other-ca.crt    an unrelated CA, for the negative test: it never verifies the broker
#   client.crt/.key a client certificate and its key, encrypted with the password in client-key.password
#                   (0600), to prove `ssl.key.password` reaches librdkafka and never its output
# The broker keystore is PKCS#12 with a random password (0600 files). `start` prints and writes
# $RUN/kafka-tls/env: KAFKA_TLS_BROKERS, KAFKA_TLS_CA, KAFKA_TLS_OTHER_CA, KAFKA_TLS_CLIENT_CERT,
# KAFKA_TLS_CLIENT_KEY, KAFKA_TLS_CLIENT_KEY_PASSWORD_FILE.
source "$(dirname "${BASH_SOURCE[0]}")/kafka-common.sh" kafka-tls
KNAME="TLS Kafka"
TLS="$KDIR/tls"

# ca NAME CN: a self-signed CA (ca key + certificate).
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$TLS/$1.key" -out "$TLS/$1.crt" 2>/dev/null
}

# leaf NAME CN EXTENSIONS [KEY-PASSWORD-FILE]: a key and a certificate signed by ca.crt.
leaf() {
  local enc=()
  [[ -z ${4:-} ]] || enc=(-aes-256-cbc -pass "file:$4")
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "${enc[@]}" -out "$TLS/$1.key" 2>/dev/null
  local pass=()
  [[ -z ${4:-} ]] || pass=(-passin "file:$4")
  openssl req -new -key "$TLS/$1.key" "${pass[@]}" -subj "/CN=$2" -out "$TLS/$1.csr"
  printf '%s\n' "$3" >"$TLS/$1.ext"
  openssl x509 -req -in "$TLS/$1.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial -sha256 -days 825 \
    -extfile "$TLS/$1.ext" -out "$TLS/$1.crt" 2>/dev/null
  rm -f "$TLS/$1.csr" "$TLS/$1.ext"
}

# Certificates are made once and kept with the broker's data; again when one expires within 7 days.
make_certs() {
  local f
  for f in ca.crt other-ca.crt broker.crt broker.p12 client.crt client.key keystore.password client-key.password; do
    [[ -s $TLS/$f ]] || { f=; break; }
  done
  if [[ -n ${f:-} ]] && openssl x509 -checkend 604800 -noout -in "$TLS/broker.crt" >/dev/null &&
    openssl x509 -checkend 604800 -noout -in "$TLS/ca.crt" >/dev/null; then
    return 0
  fi
  rm -rf "$TLS"
  mkdir -p "$TLS"
  chmod 0700 "$TLS"
  (
    umask 077
    new_password >"$TLS/keystore.password"
    new_password >"$TLS/client-key.password"
    ca ca "aliassync test CA"
    ca other-ca "unrelated test CA"
    leaf broker localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
    leaf client aliassync "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth" "$TLS/client-key.password"
    openssl pkcs12 -export -name broker -in "$TLS/broker.crt" -inkey "$TLS/broker.key" -certfile "$TLS/ca.crt" \
      -passout "file:$TLS/keystore.password" -out "$TLS/broker.p12"
  ) || die "generating the test certificates failed"
  # Public parts: readable by the tests whatever user they run as.
  chmod 0644 "$TLS/ca.crt" "$TLS/other-ca.crt" "$TLS/broker.crt" "$TLS/client.crt"
  openssl verify -CAfile "$TLS/ca.crt" "$TLS/broker.crt" "$TLS/client.crt" >/dev/null ||
    die "the test certificates do not verify against the test CA"
}

write_props() { # $1 = file, $2 = port, $3 = controller port, $4 = keystore password
  side_props "$1" "client listener SSL only" "$2" "$3" SSL <<EOF
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/broker.p12
ssl.keystore.password=$4
ssl.key.password=$4
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.crt
ssl.client.auth=none
EOF
}

write_env() { # $1 = port
  publish_env "KAFKA_TLS_BROKERS=127.0.0.1:$1" "KAFKA_TLS_CA=$TLS/ca.crt" "KAFKA_TLS_OTHER_CA=$TLS/other-ca.crt" \
    "KAFKA_TLS_CLIENT_CERT=$TLS/client.crt" "KAFKA_TLS_CLIENT_KEY=$TLS/client.key" \
    "KAFKA_TLS_CLIENT_KEY_PASSWORD_FILE=$TLS/client-key.password"
}

# Ready = the server logged its start and a TLS handshake verifies the broker against the test CA for
# 127.0.0.1 (the address the tests connect to).
ready() {
  server_started &&
    timeout 5 openssl s_client -connect "127.0.0.1:$1" -CAfile "$TLS/ca.crt" -verify_ip 127.0.0.1 \
      -verify_return_error </dev/null >/dev/null 2>&1
}

prepare() { # $1 = port, $2 = controller port
  make_certs
  [[ $(cat "$KDIR/port" 2>/dev/null) == "$1" ]] || rm -rf "$KDIR/data"
  (umask 077 && write_props "$PROPS" "$1" "$2" "$(<"$TLS/keystore.password")")
}

start() {
  start_side "${KAFKA_TLS_PORT:-19292}" "${KAFKA_TLS_CONTROLLER_PORT:-}" "${KAFKA_TLS_HEAP_OPTS:--Xms128m -Xmx384m}"
}

side_main "TLS kafka" KAFKA_TLS_BROKERS "$@"
