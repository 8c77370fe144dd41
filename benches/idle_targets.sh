#!/usr/bin/env bash
# The idle cost of many targets on one instance: the daemon with N AWS targets (default 1000) on the KMS
# emulator and the rig's Kafka, nothing to do once every target is listed. Prints time to ready, time until
# every target is listed, then over a quiet window (default 30 s) the whole process's CPU seconds, and its
# peak and current RSS per target.
#   bash tests/support/rig.sh up; source target/rig/env; bash benches/idle_targets.sh [N] [WINDOW_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
window=${2:-30}
: "${KAFKA_BROKERS:?start the rig first: bash tests/support/rig.sh up; source target/rig/env}"
cargo build -q --release --bin aliassync -p aliassync
cargo build -q --release -p kms-emulator
dir=$(mktemp -d)
trap 'kill $daemon $emu 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
emu_port=$(free_port)
port=$(free_port)
target/release/kms-emulator --listen "127.0.0.1:$emu_port" --log warn >"$dir/emulator.log" 2>&1 &
emu=$!
id="idle-$$-$(date +%s)"
bash tests/support/rig.sh kafka-topics --create --topic "$id" --partitions 1 >/dev/null
{
  printf '[kafka]\nbrokers = "%s"\ntopic = "%s"\ngroup_id = "%s"\nlease_partitions = 6\n' "$KAFKA_BROKERS" "$id" "$id"
  printf '[ownership]\nmanaged_prefixes = ["alias/app/"]\n[metrics]\nlisten = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n' "$port"
  for i in $(seq 1 "$n"); do
    printf '[targets.t%04d]\nprovider = "aws"\nregion = "us-east-1"\nendpoint = "http://127.0.0.1:%s"\ncredentials = "env:IDLE_AWS"\n' "$i" "$emu_port"
  done
} >"$dir/aliassync.toml"
export IDLE_AWS_ACCESS_KEY_ID=AKIDEXAMPLE IDLE_AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
start=$(date +%s.%N)
target/release/aliassync run --config "$dir/aliassync.toml" >"$dir/daemon.log" 2>&1 &
daemon=$!
since() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$(date +%s.%N)" "$start"; }
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  kill -0 $daemon 2>/dev/null || { cat "$dir/daemon.log"; exit 1; }
  sleep 0.1
done
ready=$(since)
listed() { curl -sf "http://127.0.0.1:$port/status" | python3 -c 'import json,sys; t=json.load(sys.stdin)["targets"]; print(sum(1 for x in t if x.get("last_listing_unix")))'; }
until [[ $(listed) == "$n" ]]; do
  kill -0 $daemon 2>/dev/null || { tail -20 "$dir/daemon.log"; exit 1; }
  (( $(python3 -c "print(int(float(\"$(since)\")))") < 300 )) || { echo "not every target listed after 300 s: $(listed) of $n"; tail -20 "$dir/daemon.log"; exit 1; }
  sleep 0.5
done
all_listed=$(since)
cpu() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
c0=$(cpu)
sleep "$window"
c1=$(cpu)
hwm=$(awk '/VmHWM/{print $2}' "/proc/$daemon/status")
rss=$(awk '/VmRSS/{print $2}' "/proc/$daemon/status")
python3 - "$n" "$window" "$ready" "$all_listed" "$c0" "$c1" "$hwm" "$rss" <<'PY'
import os, sys
n, window, ready, listed, c0, c1, hwm, rss = sys.argv[1:]
n, window, hz = int(n), float(window), os.sysconf("SC_CLK_TCK")
cpu = (float(c1) - float(c0)) / hz
print(f"targets={n} ready={ready}s all_listed={listed}s")
print(f"idle {window:.0f}s: cpu={cpu:.2f}s ({100 * cpu / window:.2f}% of a core, {1000 * cpu / window / n:.3f} ms/s per target)")
print(f"VmHWM={int(hwm) / 1024:.0f} MiB VmRSS={int(rss) / 1024:.0f} MiB ({int(rss) / n:.0f} KiB per target)")
PY
