"""Replays the requests the official SDKs sent to a capture server (tests/vectors/,
signatures made with the fake keys) byte for byte against an emulator started with the clock check
off: each must authenticate and succeed, and the same request with one byte changed must fail with
the cloud's signature error. This pins the emulator's verification (the library's signers) to what
the SDKs really send."""

import http.client
import os
import pathlib

import pytest

from conftest import ROOT, start_emulator
from emu import ALI_ACCOUNT, AWS_ACCOUNT, HW_PROJECT, Admin

# The vectors are kept in the repository (tests/vectors/README.md); SIGNING_VECTORS overrides.
VECTORS = pathlib.Path(os.environ.get("SIGNING_VECTORS", ROOT / "tests" / "vectors"))

AWS_KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ALI_KEY = "key-hzz62f1cb66fa42qo3ht4"
HW_KEY = "0d0466b0-e727-4d9c-b35d-f84bb474a37f"


def setup_aws(a):
    a.key("aws", account=AWS_ACCOUNT, region="eu-west-1", key_id=AWS_KEY)


def setup_ali(a):
    a.key("alibaba", account=ALI_ACCOUNT, region="cn-hangzhou", key_id=ALI_KEY)


def setup_ali_alias(a):
    setup_ali(a)
    a.alias("alibaba", "alias/app/one", ALI_KEY, account=ALI_ACCOUNT, region="cn-hangzhou")


def setup_hw(a):
    a.key("huawei", project=HW_PROJECT, key_id=HW_KEY)


def setup_hw_alias(a):
    setup_hw(a)
    a.alias("huawei", "alias/app-one", HW_KEY, project=HW_PROJECT)


# file, setup, expected status, expected auth error code when tampered (status, code in body)
CASES = [
    ("aws-sigv4-createalias.txt", setup_aws, 200, "InvalidSignatureException"),
    ("aws-sigv4-listaliases.txt", setup_aws, 200, "InvalidSignatureException"),
    ("alibaba-acs3-createalias.txt", setup_ali, 200, "SignatureDoesNotMatch"),
    ("alibaba-acs3-listaliases.txt", setup_ali, 200, "SignatureDoesNotMatch"),
    ("alibaba-rpcv1-createalias.txt", setup_ali, 200, "SignatureDoesNotMatch"),
    ("alibaba-rpcv1-legacy-sdk-deletealias.txt", setup_ali_alias, 200, "SignatureDoesNotMatch"),
    ("huawei-createalias.txt", setup_hw, 201, "APIGW.0301"),
    ("huawei-listaliases.txt", setup_hw, 200, "APIGW.0301"),
    ("huawei-deletealias.txt", setup_hw_alias, 204, "APIGW.0301"),
]


@pytest.fixture(scope="module")
def replay_emulator():
    if not VECTORS.is_dir():
        pytest.skip(f"signing vectors not found at {VECTORS}")
    # The captures are old: no clock-skew check on this instance.
    server = start_emulator("--max-clock-skew", "0")
    yield server.url
    server.stop()


def parse_raw(path):
    text = path.read_text()
    raw = text.split("[raw request as received by the capture server]\n", 1)[1]
    head, body = raw.split("\n\n", 1)
    lines = head.split("\n")
    method, target, _ = lines[0].split(" ")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
    body_len = int(next(l.split("=", 1)[1] for l in text.splitlines() if l.startswith("body_len")).strip())
    body = body.encode()[:body_len]
    return method, target, headers, body


def send(url, method, target, headers, body):
    hostport = url.split("://", 1)[1]
    conn = http.client.HTTPConnection(hostport, timeout=10)
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        if name.lower() != "content-length":
            conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.mark.parametrize("file,setup,status,_code", CASES, ids=[c[0] for c in CASES])
def test_captured_request_verifies(replay_emulator, file, setup, status, _code):
    admin = Admin(replay_emulator)
    admin.reset()
    setup(admin)
    method, target, headers, body = parse_raw(VECTORS / file)
    got, data = send(replay_emulator, method, target, headers, body)
    assert got == status, data


@pytest.mark.parametrize("file,setup,_status,code", CASES, ids=[c[0] for c in CASES])
def test_tampered_request_is_rejected(replay_emulator, file, setup, _status, code):
    admin = Admin(replay_emulator)
    admin.reset()
    setup(admin)
    method, target, headers, body = parse_raw(VECTORS / file)
    if body:
        body = body.replace(b"alias", b"alias", 1)[:-2] + b"x" + body[-1:]  # one byte changed, same length
    else:
        target = target.replace("alias", "aliaz", 1) if "alias" in target else target + ("&" if "?" in target else "?") + "x=1"
    got, data = send(replay_emulator, method, target, headers, body)
    assert code.encode() in data, (got, data)
