#!/usr/bin/env bash
# Debian packages the tests may use: kcat (Kafka CLI client), prometheus (for promtool), systemd (for
# systemd-analyze verify/security of the unit), strace (the unit's syscall filter vs. what the daemon calls),
# debootstrap and systemd-container (a Debian root booted with systemd-nspawn: tests/systemd-nspawn.sh).
# Installs only what is missing; apt-get update only when something must be installed.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PKGS=(kcat prometheus systemd strace debootstrap systemd-container)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0

SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
  SUDO=(sudo -n)
fi
# The prometheus package ships a service; make sure installing it never starts a server (it would
# listen on 0.0.0.0:9090). Docker images already have this deny-all policy-rc.d; add it if absent.
policy=/usr/sbin/policy-rc.d added_policy=
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod +x "$policy"
  added_policy=1
fi
log="$CACHE/apt-install.log"
rc=0
{
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
} >"$log" 2>&1 || rc=$?
[[ -z $added_policy ]] || "${SUDO[@]}" rm -f "$policy"
((rc == 0)) || { tail_log "$log"; die "apt-get install ${missing[*]} failed (log: $log)"; }
