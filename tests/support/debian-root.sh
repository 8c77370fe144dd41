#!/usr/bin/env bash
# A minimal Debian bookworm root with systemd as init, for booting with systemd-nspawn
# (tests/systemd-nspawn.sh). Built once with debootstrap from the Debian mirror and cached under
# $CACHE/debian-root/; tests never write to it: they boot an overlay of it (upper layer in their run dir).
#   debian-root.sh path    build if missing, print the cached root's directory
#   debian-root.sh clean   remove every cached root
# The root's name carries a hash of the suite and package list, so changing either builds a new one.
# Needs root (debootstrap). Mirror: $DEBIAN_MIRROR (default http://deb.debian.org/debian).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# systemd as PID 1 and what the aliassync .deb depends on (`dpkg -I target/debian/*.deb`: libc6, libssl3, zlib1g);
# dbus for a complete system bus, ca-certificates as on a real host, procps for debugging by hand.
INCLUDE=systemd,systemd-sysv,dbus,libc6,libssl3,zlib1g,ca-certificates,procps
DIR="$CACHE/debian-root"

root_path() {
  local id
  id=$(printf '%s\n' "$SUITE" "$INCLUDE" "v1" | sha256sum | cut -c1-12)
  echo "$DIR/$SUITE-$id"
}

build() {
  local root=$1 tmp log
  ((EUID == 0)) || die "debootstrap needs root"
  command -v debootstrap >/dev/null || "$SUPPORT/install-debs.sh"
  command -v debootstrap >/dev/null || die "no debootstrap (apt-get install debootstrap)"
  mkdir -p "$DIR"
  tmp="$root.tmp.$$"
  log="$DIR/debootstrap.log"
  rm -rf "$tmp"
  note "debootstrap $SUITE into $root (once; log: $log)"
  # minbase: no priority-important extras; the root only has to boot systemd and run one service.
  if ! timeout 900 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$MIRROR" >"$log" 2>&1; then
    tail_log "$log"
    rm -rf "$tmp"
    die "debootstrap failed (log: $log)"
  fi
  # A fixed hostname and an empty machine-id (systemd makes a transient one per boot, so the cached root
  # never carries one identity into several containers); no apt caches in the image.
  echo aliassync-test >"$tmp/etc/hostname"
  : >"$tmp/etc/machine-id"
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  # Nothing but the test's unit should need the console or the network: skip the units that would wait on them.
  for u in getty.target console-getty.service systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$u"
  done
  # Another run may have finished the same root meanwhile: keep that one (mv would nest ours inside it).
  if [[ -e $root ]]; then rm -rf "$tmp"; else mv "$tmp" "$root"; fi
}

cmd=${1:-}
case $cmd in
  path)
    root=$(root_path)
    [[ -x $root/lib/systemd/systemd ]] || build "$root"
    echo "$root"
    ;;
  clean) rm -rf "$DIR" ;;
  *) echo "usage: $0 path | clean" >&2; exit 2 ;;
esac
