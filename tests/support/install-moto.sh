#!/usr/bin/env bash
# Python venv in $CACHE/moto-venv with moto's server (the KMS emulator) and boto3, pinned to the
# versions checked by hand in emulator/reference/test-peers.md. pip runs only when the pins change.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV="$CACHE/moto-venv"
REQS=("moto[server]==5.2.5" "boto3==1.44.5" "botocore==1.44.5")
MARKER="$VENV/.installed"

[[ -f $MARKER && $(<"$MARKER") == "${REQS[*]}" ]] && exit 0
log="$CACHE/moto-install.log"
{
  [[ -x $VENV/bin/python ]] || "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQS[@]}"
} >"$log" 2>&1 || { tail_log "$log"; die "moto install failed (log: $log)"; }
echo "${REQS[*]}" >"$MARKER"
