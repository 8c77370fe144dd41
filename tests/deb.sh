#!/usr/bin/env bash
# Builds the Debian package (cargo-deb, installed from crates.io into ~/.cargo/bin once), installs it with
# dpkg on this machine, checks what it put where, runs systemd-analyze on the installed unit, then purges it.
# The service is never started (PID 1 need not be systemd; the maintainer scripts cope with that).
# Needs root (dpkg). Run by tests/run.sh; alone: `bash tests/deb.sh`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0
PKG=aliassync
fail() { echo "deb: FAIL: $*" >&2; exit 1; }
ok() { echo "deb: ok: $*"; }

((EUID == 0)) || { echo "deb: skipped (dpkg -i needs root)"; exit 0; }

if [[ $(cargo deb --version 2>/dev/null) != *"$CARGO_DEB_VERSION"* ]]; then
  echo "deb: installing cargo-deb $CARGO_DEB_VERSION (once; cached in ~/.cargo/bin)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# Only the daemon binary, in release; cargo-deb packages it as built.
cargo build --release --bin aliassync --quiet

# What a plain `cargo build --release` / `cargo install --path .` builds: the daemon package alone. The test-only
# emulator is a workspace member outside the default members, so neither compiles nor installs it.
# Package ids are `path+file:///DIR#NAME@VERSION`, or `…/NAME#VERSION` when the directory is the name.
members=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
ids = json.load(sys.stdin)["workspace_default_members"]
name = lambda i: i.split("#")[1].split("@")[0] if "@" in i else i.split("#")[0].rstrip("/").rsplit("/", 1)[-1]
print(" ".join(sorted(name(i) for i in ids)))')
[[ $members == aliassync ]] || fail "default workspace members are '$members', expected the daemon package only"
root=$(mktemp -d)
out=$(cargo install --path . --root "$root" --locked --quiet 2>&1) || fail "cargo install --path .: $out"
installed=$(ls "$root/bin")
rm -rf "$root"
[[ $installed == aliassync ]] || fail "cargo install --path . installed: $installed (want only aliassync)"
ok "cargo install --path . installs only aliassync; default members: the daemon package"

out=$(cargo deb --no-build --strip --output target/debian 2>&1) || fail "cargo deb: $out"
deb=$(tail -n 1 <<<"$out")
[[ -f $deb ]] || fail "cargo deb produced no package: $out"
ok "built $deb ($(du -h "$deb" | cut -f1))"

purge() { dpkg -P "$PKG" >/dev/null 2>&1 || true; }
if dpkg-query -W "$PKG" >/dev/null 2>&1; then
  echo "deb: $PKG was installed before this test; purging it first"
  purge
fi
trap purge EXIT

dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
ok "installed"

for f in /usr/bin/aliassync /lib/systemd/system/aliassync.service /etc/aliassync/aliassync.toml \
  /usr/share/doc/aliassync/copyright /usr/share/doc/aliassync/README.md \
  /usr/share/doc/aliassync/credentials.example/aws-prod; do
  [[ -f $f ]] || fail "missing $f"
done
ok "files in place"
if [[ -d config/alerts ]]; then
  for f in config/alerts/*.yml; do
    [[ -f /usr/share/aliassync/alerts/$(basename "$f") ]] || fail "alert rules $f not in /usr/share/aliassync/alerts/"
  done
  ok "alert rules in /usr/share/aliassync/alerts/"
fi
[[ $(/usr/bin/aliassync --version) == aliassync* ]] || fail "/usr/bin/aliassync --version"
dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q '/etc/aliassync/aliassync.toml' ||
  fail "/etc/aliassync/aliassync.toml is not a conffile"
[[ $(stat -c '%a %U' /etc/aliassync/credentials) == "700 root" ]] || fail "/etc/aliassync/credentials is not root 0700"
ok "conffile, binary, credentials dir"

# The installed unit as systemd reads it (the real /usr/bin/aliassync this time).
out=$(systemd-analyze verify /lib/systemd/system/aliassync.service 2>&1) || fail "systemd-analyze verify: $out"
if grep -q aliassync <<<"$out"; then fail "systemd-analyze verify warnings: $out"; fi
ok "systemd-analyze verify /lib/systemd/system/aliassync.service"
exposure=$(systemd-analyze security --offline=yes /lib/systemd/system/aliassync.service 2>&1 |
  sed -n 's/.*Overall exposure level for aliassync.service: \([0-9.]*\).*/\1/p')
[[ -n $exposure ]] || fail "no exposure level from systemd-analyze security"
python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)" || fail "exposure $exposure > 2.0"
ok "systemd-analyze security: exposure $exposure"

# The shipped example config is valid with the shipped example credentials (`run` checks it the same way at start).
CREDENTIALS_DIRECTORY=/usr/share/doc/aliassync/credentials.example \
  /usr/bin/aliassync check-config --offline --config /etc/aliassync/aliassync.toml >/dev/null ||
  fail "check-config of the shipped example config"
ok "check-config of /etc/aliassync/aliassync.toml"

dpkg -r "$PKG" >/dev/null || fail "dpkg -r"
[[ ! -e /usr/bin/aliassync && ! -e /lib/systemd/system/aliassync.service ]] || fail "files left after dpkg -r"
[[ -f /etc/aliassync/aliassync.toml ]] || fail "dpkg -r removed the conffile (only purge should)"
dpkg -P "$PKG" >/dev/null || fail "dpkg -P"
[[ ! -e /etc/aliassync ]] || fail "/etc/aliassync left after purge"
trap - EXIT
ok "removed and purged"
echo "deb: all checks passed"
