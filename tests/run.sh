#!/usr/bin/env bash
# Every test, from a fresh clone: installs and starts the rig (real Kafka, moto; cached between runs),
# checks formatting, lints and the supply chain, runs unit, integration and end-to-end tests (the KMS
# emulator is started by the tests that use it), the cloud SDK fidelity tests, the alert-rule tests, the
# .deb check, the .deb under a real systemd, and every fuzz target briefly, then stops the rig by PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/support/rig.sh up
trap 'bash tests/support/kafka-tls.sh stop; bash tests/support/kafka-sasl.sh stop; bash tests/support/rig.sh down' EXIT
# shellcheck disable=SC1091
source target/rig/env
# A second broker that only speaks SASL/SCRAM-SHA-512 (tests/e2e_systemd.rs); stopped by PID on exit.
bash tests/support/kafka-sasl.sh start >/dev/null
# shellcheck disable=SC1091
source target/rig/kafka-sasl/env
# A third broker whose client listener is TLS only, with its test CAs (tests/e2e_tls.rs); stopped by PID on exit.
bash tests/support/kafka-tls.sh start >/dev/null
# shellcheck disable=SC1091
source target/rig/kafka-tls/env

step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The fuzz entry points (src/fuzzing.rs) exist only with this feature.
cargo clippy --lib --features fuzzing -- -D warnings
step "supply chain: cargo deny check licenses bans sources (deny.toml)"
bash tests/supply-chain.sh
step "cargo test (unit, integration, end to end against Kafka $KAFKA_BROKERS and moto $MOTO_URL)"
# The emulator is a workspace member the tests start; build every binary first.
cargo build --workspace --bins
# Benches are compiled by clippy above and run by `cargo bench` (harnesses that print figures).
cargo test --workspace --lib --bins --tests -- --test-threads=2
step "official cloud SDKs (boto3, Alibaba Tea, Huawei) against the emulator, and boto3 against moto"
bash tests/sdk/run.sh
step "alert rules (promtool check/test rules) and the Grafana dashboard"
bash tests/alerts.sh
step "Debian package: cargo deb, dpkg -i, systemd-analyze verify/security of the installed unit, dpkg -P"
bash tests/deb.sh
step "the .deb under a real systemd (systemd-nspawn, Debian bookworm): readiness, reload, watchdog, stop, security"
bash tests/systemd-nspawn.sh
step "fuzzing: every target for about 15 s (cargo-fuzz, nightly, address sanitizer; fuzz/run.sh)"
bash fuzz/run.sh --ci
step "all tests passed"
