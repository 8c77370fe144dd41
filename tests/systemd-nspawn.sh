#!/usr/bin/env bash
# The .deb under a real systemd: boots a Debian bookworm root (tests/support/debian-root.sh, cached) with
# systemd-nspawn, installs target/debian/aliassync_*.deb with dpkg inside it, and drives aliassync.service with
# systemctl. The container shares the host's network, so the daemon reaches the rig's Kafka and a KMS emulator
# on 127.0.0.1. Checks, each failing if systemd or the daemon behaves otherwise:
#   1. `systemctl start` returns only after READY=1: it blocks (activating, "Kafka unavailable") while the
#      broker cannot be reached (the config's bootstrap address is a proxy that is not listening yet) and
#      returns once the proxy is up and the desired state is rebuilt;
#   2. the sample aliases converge in the emulator;
#   3. `systemctl reload` (SIGHUP): a LoadCredential= file changed under /etc/aliassync/credentials/ is NOT
#      picked up (systemd 252 keeps its copy), a group-readable key file outside it is, in place;
#   4. the watchdog (the shipped WatchdogSec=30) kills a SIGSTOPped daemon and systemd restarts it;
#   5. `systemctl stop` drains in-flight reconciles and the daemon exits 0 (Result=success);
#   6. `systemd-analyze security aliassync.service`, run by the container's systemd, rates it ≤ 2.0;
#   7. an invalid config, or a missing credential file, fails the start with status 78 and is not restarted.
# Test-only additions to the unit, as drop-ins: SupplementaryGroups= for the key file of check 3 (what README
# "Credentials" recommends for rotation by reload) and an ExecStopPost= that logs how the main process ended.
# Needs root (debootstrap, nspawn, mounts), the rig (started if target/rig/env is missing), the .deb
# (`bash tests/deb.sh`; or $NSPAWN_DEB) and target/debug/kms-emulator (built here). Run by tests/run.sh; alone:
# `bash tests/systemd-nspawn.sh`. Everything it starts is stopped, and everything it mounts unmounted, on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tests/support/common.sh
source tests/support/common.sh

fail() {
  echo "nspawn: FAIL: $*" >&2
  if [[ -n ${LEADER:-} ]]; then
    echo "---- journalctl -u aliassync (last 60 lines) ----" >&2
    in_ct journalctl -u aliassync -n 60 --no-pager >&2 || true
  fi
  exit 1
}
ok() { echo "nspawn: ok: $*"; }
elapsed() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; } # seconds since a `date +%s.%N`
T0=$SECONDS

((EUID == 0)) || { echo "nspawn: skipped (systemd-nspawn needs root)"; exit 0; }
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
  bash tests/support/install-debs.sh
fi

[[ -f target/rig/env ]] || bash tests/support/rig.sh up >/dev/null
# shellcheck disable=SC1091
source target/rig/env
port_open "${KAFKA_BROKERS%:*}" "${KAFKA_BROKERS##*:}" ||
  fail "Kafka $KAFKA_BROKERS is not up (bash tests/support/rig.sh up)"

deb=${NSPAWN_DEB:-}
if [[ -z $deb ]]; then # the newest one
  deb=$(find target/debian -maxdepth 1 -name 'aliassync_*.deb' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1)
  deb=${deb#* }
fi
[[ -n $deb ]] || fail "no target/debian/aliassync_*.deb (bash tests/deb.sh builds it)"
cargo build --quiet -p kms-emulator
root=$(bash tests/support/debian-root.sh path)

W="$RUN/nspawn"
MACHINE=aliassync-nspawn
EMULATOR_PORT=${NSPAWN_EMULATOR_PORT:-15070}
EMU="http://127.0.0.1:$EMULATOR_PORT"
# The emulator keeps its pid file under $W, apart from the one other tests start with emulator.sh.
emulator() { ALIASSYNC_RUN="$W" bash tests/support/emulator.sh "$@"; }
LEADER='' mounted_nspawn_run=''

cleanup() {
  local rc=$? pid
  if pid=$(pid_running "$W/nspawn.pid" systemd-nspawn); then
    # The first SIGTERM asks nspawn to halt the container (systemd shuts down); KILL if that hangs.
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$W/nspawn.pid"
  if mountpoint -q "$W/root"; then umount "$W/root" || umount -l "$W/root"; fi
  [[ -z $mounted_nspawn_run ]] || umount /run/systemd/nspawn || umount -l /run/systemd/nspawn || true
  stop_pid_file "$W/proxy.pid" kafka-proxy 5 || true
  emulator stop >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

# A previous run killed before its cleanup: the same steps, then a fresh work dir.
if pid=$(pid_running "$W/nspawn.pid" systemd-nspawn); then kill -KILL "$pid"; sleep 1; fi
if mountpoint -q "$W/root" 2>/dev/null; then umount -l "$W/root"; fi
stop_pid_file "$W/proxy.pid" kafka-proxy 5 || true
emulator stop >/dev/null 2>&1 || true
rm -rf "$W"
mkdir -p "$W"/{upper,work,root}

# ----- peers on 127.0.0.1: the emulator with two AWS keys of two accounts, a Kafka proxy (started later) -----
ACCT_A=210000000001 ACCT_B=210000000002
AKID_A=AKIANSPAWNTEST00000A AKID_B=AKIANSPAWNTEST00000B
secret_a=$(head -c 30 /dev/urandom | base64 | tr -d '/+=')
secret_b=$(head -c 30 /dev/urandom | base64 | tr -d '/+=')
(
  umask 077
  cat >"$W/emulator-credentials.toml" <<EOF
[[credential]]
cloud = "aws"
access_key_id = "$AKID_A"
secret = "$secret_a"
account = "$ACCT_A"

[[credential]]
cloud = "aws"
access_key_id = "$AKID_B"
secret = "$secret_b"
account = "$ACCT_B"
EOF
)
aws_creds() { printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$1" "$2"; }
EMULATOR_ARGS="--credentials $W/emulator-credentials.toml" emulator start "$EMULATOR_PORT" >/dev/null

key() { # ACCOUNT → a new key id in us-east-1
  curl -fsS -X POST "$EMU/_emulator/keys" -H 'content-type: application/json' \
    -d "{\"cloud\":\"aws\",\"account\":\"$1\",\"region\":\"us-east-1\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key_id"])'
}
aliases() { # ACCOUNT → "alias key_id" lines
  curl -fsS "$EMU/_emulator/state?cloud=aws&account=$1&region=us-east-1" | python3 -c '
import json, sys
def walk(v):
    if isinstance(v, dict):
        if isinstance(v.get("aliases"), dict):
            for name, key in v["aliases"].items():
                print(name, key)
        else:
            for x in v.values():
                walk(x)
walk(json.load(sys.stdin))'
}
key_a=$(key "$ACCT_A") key_b=$(key "$ACCT_B")

# The daemon bootstraps through this proxy, so the test decides when Kafka becomes reachable; the metadata
# it gets back names the real broker, which it then talks to directly.
cat >"$W/kafka-proxy.py" <<'EOF'
import socket, sys, threading
listen, target = int(sys.argv[1]), sys.argv[2].rsplit(":", 1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen))
srv.listen(64)
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    client, _ = srv.accept()
    try:
        upstream = socket.create_connection((target[0], int(target[1])))
    except OSError:
        client.close()
        continue
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
EOF
proxy_port=$(free_port)
metrics_port=$(free_port)

id="nspawn-$(date +%s)-$$"
topic="desired-$id"
bash tests/support/rig.sh kafka-topics --create --topic "$topic" --partitions 3 \
  --config cleanup.policy=compact >/dev/null
ok "peers: Kafka $KAFKA_BROKERS (topic $topic), emulator $EMU (2 AWS accounts), proxy port $proxy_port (closed)"

# ----- boot -----
mount -t overlay overlay -o "lowerdir=$root,upperdir=$W/upper,workdir=$W/work" "$W/root"
if ! mountpoint -q /run/systemd/nspawn; then
  mkdir -p /run/systemd/nspawn
  mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
  mounted_nspawn_run=1
fi
cp "$deb" "$W/root/root/aliassync.deb"
boot_t0=$(date +%s.%N)
spawn_bg "$W/nspawn.pid" "$W/console.log" systemd-nspawn --boot --register=no --keep-unit \
  --directory="$W/root" --machine="$MACHINE" --console=pipe
nspawn_pid=$(<"$W/nspawn.pid")

# The container's PID 1 is nspawn's child whose PID in its own namespace is 1.
deadline=$((SECONDS + 30))
until [[ -n $LEADER ]]; do
  alive "$nspawn_pid" || { tail_log "$W/console.log"; fail "systemd-nspawn exited"; }
  ((SECONDS < deadline)) || fail "no container init after 30 s"
  # shellcheck disable=SC2013 # the file is a list of PIDs
  for c in $(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null); do
    if [[ $(awk '/^NSpid:/ {print $NF}' "/proc/$c/status" 2>/dev/null) == 1 ]]; then LEADER=$c; fi
  done
  [[ -n $LEADER ]] || sleep 0.2
done
# Run a command in the container (all its namespaces, a clean environment), time-bound.
in_ct() { timeout "${CT_TIMEOUT:-60}" nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
# PID 1 exists before its control socket does: wait for systemctl to connect, then for the boot to finish.
deadline=$((SECONDS + 60))
until state=$(in_ct systemctl is-system-running 2>&1) || [[ $state != *"Failed to connect"* ]]; do
  ((SECONDS < deadline)) || fail "systemd in the container does not answer: $state"
  sleep 0.2
done
state=$(CT_TIMEOUT=90 in_ct systemctl is-system-running --wait 2>&1) || true
[[ $state == running ]] || fail "container system state: $state; $(in_ct systemctl --failed --no-legend 2>&1)"
ok "booted $(in_ct systemctl --version | head -n 1) in a Debian bookworm container in $(elapsed "$boot_t0") s" \
  "(state running)"

show() { in_ct systemctl show aliassync -p "$1" --value; }
# The unit's journal, messages only, ANSI colours dropped; `mark` and `since MARK` delimit one step's lines.
# Matches read all input (grep >/dev/null, not -q): under pipefail, a writer cut off by SIGPIPE fails the check.
journal() { in_ct journalctl -u aliassync -o cat --no-pager | sed 's/\x1b\[[0-9;]*m//g'; }
mark() { journal | wc -l; }
since() { journal | tail -n "+$(($1 + 1))"; }
wait_journal() { # MARK REGEX TIMEOUT
  local deadline=$((SECONDS + $3))
  until since "$1" | grep -E -- "$2" >/dev/null; do
    ((SECONDS < deadline)) || fail "no journal line matching '$2' within $3 s"
    sleep 0.3
  done
}
wait_alias() { # ACCOUNT ALIAS KEY TIMEOUT
  local deadline=$((SECONDS + $4))
  until aliases "$1" | grep -x -- "$2 $3" >/dev/null; do
    ((SECONDS < deadline)) || fail "$2 → $3 not in account $1 within $4 s"
    sleep 0.3
  done
}
publish() { # ALIAS=KEY... : one desired-state file, published by the installed binary over the real broker
  {
    echo "aliases:"
    for kv in "$@"; do printf '  %s:\n    aws-use1: %s\n' "${kv%%=*}" "${kv#*=}"; done
  } >"$W/root/root/desired.yaml"
  in_ct env ALIASSYNC__KAFKA__BROKERS="$KAFKA_BROKERS" aliassync --config /etc/aliassync/aliassync.toml \
    publish /root/desired.yaml >"$W/publish.log" 2>&1 || { tail_log "$W/publish.log"; fail "aliassync publish"; }
}
exposure() {
  in_ct systemd-analyze security aliassync.service 2>&1 |
    sed -n 's/.*Overall exposure level for aliassync.service: \([0-9.]*\).*/\1/p'
}

# ----- install -----
in_ct dpkg -i /root/aliassync.deb >/dev/null || fail "dpkg -i in the container"
[[ $(in_ct systemctl is-enabled aliassync 2>&1) == disabled ]] || fail "the package enabled the service"
[[ $(show ActiveState) == inactive ]] || fail "the package started the service"
[[ $(show FragmentPath) == /lib/systemd/system/aliassync.service ]] || fail "unit not loaded from the package"
ok "dpkg -i $(basename "$deb"): unit loaded by systemd, not enabled, not started"

# 6. The shipped unit as this systemd loaded it (not --offline), before the test adds its drop-in.
score=$(exposure)
[[ -n $score ]] || fail "no exposure level from systemd-analyze security"
python3 -c "import sys; sys.exit(0 if float('$score') <= 2.0 else 1)" || fail "exposure $score > 2.0"
ok "6. systemd-analyze security aliassync.service (the container's systemd, shipped unit): exposure $score ≤ 2.0"

# ----- configure: one target in the emulator; keys A via LoadCredential= from /etc/aliassync/credentials/ -----
config() { # CREDENTIALS-REFERENCE
  cat >"$W/root/etc/aliassync/aliassync.toml" <<EOF
[kafka]
brokers = "127.0.0.1:$proxy_port"
topic = "$topic"
group_id = "g-$id"
lease_partitions = 3
lease_session_timeout_ms = 6000

[ownership]
managed_prefixes = ["alias/app/"]

[metrics]
listen = "127.0.0.1:$metrics_port"

[drift]
scan_interval_seconds = 3600

[targets.aws-use1]
provider = "aws"
region = "us-east-1"
endpoint = "$EMU"
credentials = "$1"
rate_limit_per_second = 50
concurrency = 4
EOF
}
config file:aws-prod
aws_creds "$AKID_A" "$secret_a" | in_ct install -m 0600 /dev/stdin /etc/aliassync/credentials/aws-prod
# For rotation by reload (check 3): a key file the service may read, via a group; see README "Credentials".
in_ct groupadd --system aliassync-keys
in_ct install -d -m 0750 -g aliassync-keys /run/aliassync-keys
aws_creds "$AKID_B" "$secret_b" | in_ct install -m 0640 -g aliassync-keys /dev/stdin /run/aliassync-keys/aws-prod
mkdir -p "$W/root/etc/systemd/system/aliassync.service.d"
printf '[Service]\nSupplementaryGroups=aliassync-keys\n' >"$W/root/etc/systemd/system/aliassync.service.d/keys.conf"
# Test only: how each run of the main process ended, into the journal. systemd unloads a unit that stopped
# cleanly, and with it ExecMainStatus/Result, so `systemctl show` after a stop cannot tell.
cat >"$W/root/etc/systemd/system/aliassync.service.d/test-exit.conf" <<'EOF'
[Service]
ExecStopPost=/bin/sh -c 'echo "test: result=$SERVICE_RESULT code=$EXIT_CODE status=$EXIT_STATUS"'
EOF
in_ct systemctl daemon-reload
score_dropin=$(exposure)
python3 -c "import sys; sys.exit(0 if float('${score_dropin:-99}') <= 2.0 else 1)" ||
  fail "exposure with SupplementaryGroups= drop-in: ${score_dropin:-none} > 2.0"

samples=()
for svc in payments ledger search mail audit; do samples+=("alias/app/$svc=$key_a"); done
publish "${samples[@]}"

# ----- 1. start waits for READY -----
start_t0=$SECONDS
(
  rc=0
  CT_TIMEOUT=180 in_ct systemctl start aliassync || rc=$?
  echo "$rc" >"$W/start.rc"
) &
start_job=$!
deadline=$((SECONDS + 30))
until [[ $(show StatusText) == *"Kafka unavailable"* ]]; do
  ((SECONDS < deadline)) || fail "no 'Kafka unavailable' status within 30 s: $(show StatusText)"
  sleep 0.3
done
sleep 3 # systemd must keep the start job waiting, not give up or call it started
[[ $(show ActiveState)/$(show SubState) == activating/start ]] ||
  fail "expected activating/start while Kafka is unreachable, got $(show ActiveState)/$(show SubState)"
kill -0 "$start_job" 2>/dev/null || fail "systemctl start returned while the daemon was not ready"
waited=$((SECONDS - start_t0))
spawn_bg "$W/proxy.pid" "$W/proxy.log" python3 "$W/kafka-proxy.py" "$proxy_port" "$KAFKA_BROKERS"
wait_for_port 127.0.0.1 "$proxy_port" 10 || fail "the proxy did not listen"
proxy_t0=$(date +%s.%N)
deadline=$((SECONDS + 90))
while kill -0 "$start_job" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "systemctl start did not return within 90 s of Kafka becoming reachable"
  sleep 0.1
done
ready_s=$(elapsed "$proxy_t0")
[[ $(<"$W/start.rc") == 0 ]] || fail "systemctl start exited $(<"$W/start.rc")"
[[ $(show ActiveState)/$(show SubState) == active/running ]] || fail "after start: $(show ActiveState)/$(show SubState)"
status=$(show StatusText)
[[ $status == "ready: 5 desired aliases"* ]] || fail "StatusText after start: $status"
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$metrics_port/readyz") == 200 ]] ||
  fail "/readyz is not 200 when systemctl start returned"
ok "1. systemctl start blocked ${waited}+ s (activating/start, \"Kafka unavailable\"); returned ${ready_s} s" \
  "after Kafka became reachable: active/running, /readyz 200, STATUS=\"$status\""

# ----- 2. convergence -----
conv_t0=$SECONDS
for kv in "${samples[@]}"; do wait_alias "$ACCT_A" "${kv%%=*}" "${kv#*=}" 60; done
ok "2. 5 sample aliases in the emulator (account A, us-east-1) within $((SECONDS - conv_t0)) s of ready"

# ----- 3. reload -----
pid0=$(show MainPID)
# 3a. The LoadCredential= source changes to keys B: reload re-reads $CREDENTIALS_DIRECTORY, whose copy systemd
# made at start and does not refresh on reload (systemd 252): nothing changes, writes still sign with keys A.
aws_creds "$AKID_B" "$secret_b" | in_ct install -m 0600 /dev/stdin /etc/aliassync/credentials/aws-prod
m=$(mark)
in_ct systemctl reload aliassync || fail "systemctl reload"
wait_journal "$m" 'reload done' 20
since "$m" | grep -E 'reload: credentials reloaded' | grep 'changed=false' >/dev/null ||
  fail "reload after changing /etc/aliassync/credentials/aws-prod changed the credentials: this systemd" \
    "refreshes LoadCredential= on reload; update README \"Credentials\", the unit's comment and this test"
publish "alias/app/rotate-1=$key_a"
wait_alias "$ACCT_A" alias/app/rotate-1 "$key_a" 30
ok "3a. reload after replacing the LoadCredential= file: changed=false, writes still signed by keys A" \
  "(systemd $(in_ct systemctl --version | awk 'NR==1 {print $2}') keeps its copy)"
# 3b. The config points at the group-readable file (keys B): reload swaps them without a restart.
config file:/run/aliassync-keys/aws-prod
m=$(mark)
in_ct systemctl reload aliassync || fail "systemctl reload"
wait_journal "$m" 'reload done' 20
since "$m" | grep -E 'reload: credentials reloaded' | grep 'changed=true' >/dev/null ||
  fail "reload did not change the credentials"
publish "alias/app/rotate-2=$key_b"
wait_alias "$ACCT_B" alias/app/rotate-2 "$key_b" 30
# 3c. That file replaced in place with keys A (what a secrets agent does): reload, and writes sign with A again.
aws_creds "$AKID_A" "$secret_a" | in_ct install -m 0640 -g aliassync-keys /dev/stdin /run/aliassync-keys/aws-prod
m=$(mark)
in_ct systemctl reload aliassync || fail "systemctl reload"
wait_journal "$m" 'reload done' 20
since "$m" | grep -E 'reload: credentials reloaded' | grep 'changed=true' >/dev/null ||
  fail "in-place rotation not picked up"
publish "alias/app/rotate-3=$key_a"
wait_alias "$ACCT_A" alias/app/rotate-3 "$key_a" 30
! aliases "$ACCT_A" | grep '^alias/app/rotate-2 ' >/dev/null || fail "rotate-2 written with keys A"
[[ $(show MainPID) == "$pid0" && $(show NRestarts) == 0 ]] || fail "reload restarted the daemon"
[[ $(show ActiveState)/$(show SubState) == active/running ]] ||
  fail "after reloads: $(show ActiveState)/$(show SubState)"
ok "3b. reload with a group-readable key file (SupplementaryGroups= drop-in): keys A → B → A in place," \
  "each write in its keys' account, same MainPID $pid0, NRestarts 0"

# ----- 4. watchdog -----
m=$(mark)
in_ct kill -STOP "$pid0"
stop_t0=$(date +%s.%N)
deadline=$((SECONDS + 60))
until [[ $(show MainPID) != "$pid0" ]]; do
  ((SECONDS < deadline)) || fail "the SIGSTOPped daemon was not killed within 60 s (WatchdogSec=$(show WatchdogUSec))"
  sleep 0.2
done
killed_s=$(elapsed "$stop_t0")
deadline=$((SECONDS + 60))
until [[ $(show ActiveState)/$(show SubState) == active/running ]]; do
  ((SECONDS < deadline)) ||
    fail "not active again within 60 s of the watchdog kill: $(show ActiveState)/$(show SubState)"
  sleep 0.2
done
back_s=$(elapsed "$stop_t0")
since "$m" | grep 'Watchdog timeout' >/dev/null || fail "no 'Watchdog timeout' in the journal"
since "$m" | grep -x 'test: result=watchdog code=killed status=ABRT' >/dev/null ||
  fail "the daemon did not end by the watchdog's SIGABRT: $(since "$m" | grep '^test: ')"
[[ $(show NRestarts) == 1 ]] || fail "NRestarts=$(show NRestarts), expected 1"
# Pings come every 15 s, so a kill earlier than 15 s after SIGSTOP is not the watchdog's.
python3 -c "import sys; sys.exit(0 if 15 <= $killed_s <= 40 else 1)" || fail "killed ${killed_s} s after SIGSTOP"
ok "4. SIGSTOP → \"Watchdog timeout\", SIGABRT after ${killed_s} s (WatchdogSec=30), active/running again" \
  "after ${back_s} s (RestartSec=5), NRestarts 1, new MainPID $(show MainPID)"

# ----- 5. stop drains, exit 0 -----
# The restarted daemon must hold the target's lease again (the killed one's expires after 6 s) to have work.
deadline=$((SECONDS + 60))
until [[ $(show StatusText) == *"owns 1 of 1 targets"* ]]; do
  ((SECONDS < deadline)) || fail "the restarted daemon does not own the target: $(show StatusText)"
  sleep 0.3
done
# Every AWS call takes 1.5 s now, so reconciles are in flight when SIGTERM arrives.
curl -fsS -X POST "$EMU/_emulator/faults" -H 'content-type: application/json' \
  -d '{"cloud":"aws","latency_ms":1500}' >/dev/null
drain=()
for i in 1 2 3; do drain+=("alias/app/drain-$i=$key_a"); done
publish "${drain[@]}"
sleep 1
m=$(mark)
t=$(date +%s.%N)
in_ct systemctl stop aliassync || fail "systemctl stop"
stop_s=$(elapsed "$t")
curl -fsS -X DELETE "$EMU/_emulator/faults" >/dev/null
[[ $(show ActiveState) == inactive ]] || fail "after stop: $(show ActiveState)"
result=$(since "$m" | sed -n 's/^test: //p')
[[ $result == "result=success code=exited status=0" ]] || fail "after stop: ${result:-no ExecStopPost line}"
since "$m" | grep 'shutting down: draining in-flight reconciles' >/dev/null || fail "no drain in the journal"
since "$m" | grep -x '.*stopped' >/dev/null || fail "no 'stopped' in the journal"
# In flight at SIGTERM: finished after the daemon said it was shutting down, before it exited.
late=$(since "$m" | sed -n '/shutting down: draining in-flight reconciles/,$p' |
  grep -c 'reconciled .*alias/app/drain-' || true)
((late >= 1)) || fail "no reconcile finished during the drain (none was in flight?)"
for kv in "${drain[@]}"; do
  aliases "$ACCT_A" | grep -x -- "${kv%%=*} ${kv#*=}" >/dev/null ||
    fail "${kv%%=*} in flight at SIGTERM was not finished"
done
ok "5. systemctl stop with reconciles in flight: $late finished during the drain, stop took ${stop_s} s," \
  "exited 0 ($result)"

# ----- 7. an invalid config: failed, status 78, no restart -----
bad_start() { # WHAT KEY: start must fail with exit 78 naming KEY, and stay failed past RestartSec=5
  local m n0 result
  m=$(mark)
  if in_ct systemctl start aliassync 2>/dev/null; then fail "systemctl start succeeded with $1"; fi
  n0=$(show NRestarts)
  for _ in $(seq 1 16); do # 8 s
    [[ $(show ActiveState) == failed ]] || fail "$1: state $(show ActiveState)/$(show SubState) (restarting?)"
    sleep 0.5
  done
  result="$(show ActiveState) Result=$(show Result) ExecMainStatus=$(show ExecMainStatus) NRestarts=$(show NRestarts)"
  [[ $result == "failed Result=exit-code ExecMainStatus=78 NRestarts=0" && $n0 == 0 ]] || fail "$1: $result"
  [[ $(since "$m" | sed -n 's/^test: //p') == "result=exit-code code=exited status=78" ]] ||
    fail "$1: the main process did not exit 78: $(since "$m" | grep '^test: ')"
  since "$m" | grep -F -- "$2" >/dev/null || fail "$1: the journal does not name $2"
  ok "7. $1: start fails, $result after 8 s (RestartSec=5), the journal names $2"
}
sed -i "s|^listen = .*|listen = \"not-an-address\"|" "$W/root/etc/aliassync/aliassync.toml"
bad_start "invalid metrics.listen" metrics.listen
# A valid config whose credential file is missing: the unit's SetCredential= fallback stands in for it.
config file:aws-prod
in_ct rm /etc/aliassync/credentials/aws-prod
bad_start "missing /etc/aliassync/credentials/aws-prod" targets.aws-use1.credentials

echo "nspawn: all checks passed in $((SECONDS - T0)) s (exposure $score; with the test drop-ins $score_dropin)"
