#!/usr/bin/env bash
# Python venv in $CACHE/sdk-venv for the SDK fidelity tests (tests/sdk): pytest, the official cloud
# SDKs (boto3, alibabacloud_kms20160120 + the legacy aliyun-python-sdk-kms, alibabacloud-credentials,
# huaweicloudsdkkms) and
# moto's server, pinned to the versions checked by hand in emulator/reference/test-peers.md.
# A venv of its own (not moto-venv) so the SDKs' dependency pins can never disturb the moto peer
# that the Rust tests use. pip runs only when the pins change (marker file = the pin list).
#   install-sdk.sh          install if needed; prints nothing on success
#   install-sdk.sh --path   also print the venv's python
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VENV="$CACHE/sdk-venv"
REQS=(
  "pytest==9.2.0"
  "moto[server]==5.2.5" "boto3==1.44.5" "botocore==1.44.5"
  "alibabacloud_kms20160120==3.3.1" "alibabacloud-tea-openapi==0.4.6"
  "aliyun-python-sdk-kms==2.16.5" "aliyun-python-sdk-core==2.16.1"
  "alibabacloud-credentials==1.0.12" "alibabacloud-credentials-api==1.0.1"
  "huaweicloudsdkkms==3.1.219" "huaweicloudsdkcore==3.1.219"
  # CreateTemporaryAccessKeyByAgency (IAM assume-agency), for tests/sdk/test_huawei_credentials.py.
  "huaweicloudsdkiam==3.1.219"
)
MARKER="$VENV/.installed"

if ! [[ -f $MARKER && $(<"$MARKER") == "${REQS[*]}" ]]; then
  log="$CACHE/sdk-install.log"
  {
    [[ -x $VENV/bin/python ]] || "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQS[@]}"
  } >"$log" 2>&1 || { tail_log "$log"; die "SDK venv install failed (log: $log)"; }
  echo "${REQS[*]}" >"$MARKER"
fi
[[ ${1:-} != --path ]] || echo "$VENV/bin/python"
