#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time or number of executions, one after another,
# each with one job under nice, and prints per target: execs, seconds, exec/s, crashes. Exits 1 if any
# target crashed (the crashing input is in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh                  60 s per target
#   fuzz/run.sh 300              300 s per target
#   fuzz/run.sh -runs=10000000   ten million executions per target
#   fuzz/run.sh --ci             about 15 s per target (tests/run.sh)
#   fuzz/run.sh 120 config_load  one target
#   fuzz/run.sh --no-build ...   run the binaries already built (sources may change meanwhile)
#
# Each corpus starts from the committed seeds (fuzz/seeds/<target>/) and grows in fuzz/corpus/<target>/, which
# is not committed. Needs the nightly toolchain (installed if missing) and cargo-fuzz (installed, pinned, once).
# Builds go to fuzz/target, or $FUZZ_TARGET_DIR; --ci defaults to ~/.cache/aliassync-rig/fuzz-target, since a
# fresh clone would otherwise rebuild every dependency with the sanitizer (about 15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(event_decode aws_response alibaba_response huawei_response config_load statefile_parse)

limit=(-max_total_time=60)
build=1
ci=0
selected=()
for arg in "$@"; do
    case "$arg" in
        --ci)
            limit=(-max_total_time=15)
            ci=1
            ;;
        --no-build) build=0 ;;
        -runs=[0-9]*) limit=("$arg") ;;
        [0-9]*) limit=("-max_total_time=$arg") ;;
        -h | --help)
            sed -n '2,17p' "$0"
            exit 0
            ;;
        *)
            if [[ " ${TARGETS[*]} " != *" $arg "* ]]; then
                echo "unknown target or option: $arg (targets: ${TARGETS[*]})" >&2
                exit 2
            fi
            selected+=("$arg")
            ;;
    esac
done
((${#selected[@]})) || selected=("${TARGETS[@]}")

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain; installing it (rustup toolchain install nightly --profile minimal)" >&2
    if ! rustup toolchain install nightly --profile minimal >&2; then
        echo "fuzz: FAILED: cargo-fuzz needs a nightly Rust toolchain (sanitizers, -Zsanitizer) and it could not" \
            "be installed; install it with 'rustup toolchain install nightly' and re-run" >&2
        exit 1
    fi
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into ~/.cargo/bin" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked >&2
fi

# One build for all targets (address sanitizer, release with debug assertions); the binaries are then run
# directly, so run times are fuzzing only and a source edit during a long run changes nothing.
if ((ci)); then
    target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/aliassync-rig/fuzz-target}
else
    target_dir=${FUZZ_TARGET_DIR:-$PWD/target}
fi
((build == 0)) || nice -n 10 cargo +nightly fuzz build --target-dir "$target_dir" >&2
bin="$target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

mkdir -p artifacts/logs
declare -A execs secs rate crashes
failed=0
for t in "${selected[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/logs/$t.log"
    before=$(find "artifacts/$t" -type f | wc -l)
    start=$(date +%s.%N)
    # New inputs go to the first directory (corpus/, not committed); seeds/ is only read.
    # -max_len above the event size limit (4096) so the too_large path is reachable.
    if nice -n 10 "$bin/$t" "corpus/$t" "seeds/$t" -artifact_prefix="artifacts/$t/" \
        "${limit[@]}" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=failed
    fi
    end=$(date +%s.%N)
    secs[$t]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    execs[$t]=$(awk '/stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$log")
    rate[$t]=$(awk '/stat::average_exec_per_sec:/ { n = $2 } END { print n + 0 }' "$log")
    crashes[$t]=$(($(find "artifacts/$t" -type f | wc -l) - before))
    if [[ $status == failed && ${crashes[$t]} -eq 0 ]]; then
        # Not a crash of the target: libFuzzer itself failed (or the binary is missing).
        echo "fuzz: $t did not run; see fuzz/$log" >&2
        tail -20 "$log" >&2
        crashes[$t]=error
        failed=1
    elif ((crashes[$t] > 0)); then
        echo "fuzz: $t CRASHED; input in fuzz/artifacts/$t/, log fuzz/$log" >&2
        grep -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)|^SUMMARY" "$log" | head -5 >&2 || true
        failed=1
    fi
done

printf '\n%-18s %14s %8s %10s %8s\n' target execs seconds exec/s crashes
for t in "${selected[@]}"; do
    printf '%-18s %14s %8s %10s %8s\n' "$t" "${execs[$t]}" "${secs[$t]}" "${rate[$t]}" "${crashes[$t]}"
done
exit "$failed"
