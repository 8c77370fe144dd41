#!/usr/bin/env bash
# SDK fidelity tests: the official Python SDKs (boto3, alibabacloud_kms20160120 + aliyun-python-sdk-kms,
# huaweicloudsdkkms) against the KMS emulator, and boto3 against moto where moto matches AWS.
#   tests/sdk/run.sh [PYTEST ARGS...]      e.g. tests/sdk/run.sh -k huawei -x
# Installs the venv if needed (tests/support/install-sdk.sh), builds the emulator binary
# (cargo build -p kms-emulator) unless EMULATOR_BIN or EMULATOR_URL is set or SDK_TESTS_NO_BUILD=1,
# then runs pytest. With EMULATOR_URL / MOTO_URL set, those running servers are used and nothing is
# started; otherwise the tests start both on free ports and stop them by PID.
# Exit status: pytest's (0 = all passed); "no tests collected" counts as a failure.
source "$(dirname "${BASH_SOURCE[0]}")/../support/common.sh"

PY=$("$SUPPORT/install-sdk.sh" --path)
if [[ -z ${EMULATOR_BIN:-} && -z ${EMULATOR_URL:-} && -z ${SDK_TESTS_NO_BUILD:-} ]]; then
  note "building kms-emulator"
  (cd "$ROOT" && cargo build --quiet -p kms-emulator) || die "cargo build -p kms-emulator failed"
fi

cd "$ROOT/tests/sdk"
rc=0
"$PY" -m pytest -q -rfEs -p no:cacheprovider "$@" || rc=$?
case $rc in
  0) echo "sdk tests: PASSED" ;;
  5) echo "sdk tests: FAILED (no tests collected)"; rc=1 ;;
  *) echo "sdk tests: FAILED (pytest exit $rc; server logs in ${ALIASSYNC_RUN:-$ROOT/target/rig}/sdk-tests/)" ;;
esac
exit "$rc"
