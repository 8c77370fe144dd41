#!/usr/bin/env bash
# Supply chain: `cargo deny check licenses bans sources` over the whole workspace (the daemon and the emulator
# member; deny.toml says what is allowed and why). cargo-deny is installed from crates.io into ~/.cargo/bin once,
# pinned. Advisories need the RustSec database from GitHub, so they are not checked here: see the README.
# Run by tests/run.sh; alone: `bash tests/supply-chain.sh`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION=0.20.2

if [[ $(cargo deny --version 2>/dev/null) != *"$CARGO_DENY_VERSION"* ]]; then
  echo "supply-chain: installing cargo-deny $CARGO_DENY_VERSION (once; cached in ~/.cargo/bin)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet
fi

# --workspace: the root manifest is also a package, so without it only the daemon's graph would be checked.
# Inclusion graphs are hidden to keep the duplicate-version warnings short; run without the flag to see why a
# crate is in the tree.
cargo deny --workspace check --hide-inclusion-graph licenses bans sources
echo "supply-chain: ok: licenses, bans and sources of every workspace crate and dependency"
