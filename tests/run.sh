#!/usr/bin/env bash
# Every test, from a fresh clone: installs and starts the rig (real Kafka, moto; cached between runs),
# checks formatting and lints, runs unit, integration and end-to-end tests, then stops the rig by PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/support/rig.sh up
trap 'bash tests/support/rig.sh down' EXIT
# shellcheck disable=SC1091
source target/rig/env

step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --all-targets -- -D warnings
step "cargo test (unit, integration, end to end against Kafka $KAFKA_BROKERS and moto $MOTO_URL)"
cargo build --bins
cargo test --all-targets -- --test-threads=2
step "all tests passed"
