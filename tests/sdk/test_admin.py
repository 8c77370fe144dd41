"""The emulator's own controls: admin API validation and counters, outages that hang, region
listeners, a credentials file and the Huawei alias-prefix switch (a second emulator instance)."""

import json
import time
import urllib.error
import urllib.request

import pytest
from alibabacloud_kms20160120 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException
from huaweicloudsdkkms.v2 import model as hm

from conftest import free_port, start_emulator, LOG_DIR
from emu import HW_AK, HW_PROJECT, HW_SK, Admin, ali_client, aws_client, hw_client


def raw_admin(url, method, path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(), method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_invalid_fault_rules_are_refused(emulator_url, admin):
    for rule in (
        {"cloud": "gcp"},
        {"cloud": "aws", "errors": [{"code": "X", "rate": 2}]},
        {"cloud": "aws", "throttle": {"write": 0}},
        {"cloud": "aws", "throttle": {"everything": 1}},
        {"cloud": "aws", "outage": "sometimes"},
        {"cloud": "aws", "latency": 5},
    ):
        status, body = raw_admin(emulator_url, "POST", "/_emulator/faults", rule)
        assert status == 400 and "error" in body, rule
    assert raw_admin(emulator_url, "GET", "/_emulator/faults")[1]["rules"] == []


def test_fault_rules_replace_by_selector_and_clear_by_cloud(emulator_url, admin):
    admin.fault({"cloud": "aws", "latency_ms": 1})
    admin.fault({"cloud": "aws", "latency_ms": 2})  # same selector: replaces
    admin.fault({"cloud": "aws", "region": "eu-west-1", "errors": [{"code": "KMSInternalException", "count": 3}]})
    admin.fault({"cloud": "huawei", "outage": "503"})
    rules = admin.call("GET", "/_emulator/faults")["rules"]
    assert len(rules) == 3 and rules[0]["region"] == "eu-west-1" and rules[0]["remaining"] == [3]
    assert admin.call("DELETE", "/_emulator/faults?cloud=aws")["removed"] == 2
    assert [r["cloud"] for r in admin.call("GET", "/_emulator/faults")["rules"]] == ["huawei"]


def test_counters_and_reset(emulator_url, admin):
    kms = aws_client(emulator_url)
    kms.list_aliases()
    kms.list_aliases()
    rows = admin.calls("aws")["calls"]
    assert [(r["operation"], r["region"], r["account"], r["calls"], r["ok"]) for r in rows] == [
        ("ListAliases", "us-east-1", "123456789012", 2, 2)
    ]
    assert admin.calls()["totals"]["aws"]["calls"] == 2
    admin.call("DELETE", "/_emulator/calls")
    assert admin.calls()["calls"] == []


def test_error_rate_is_probabilistic(emulator_url, admin):
    admin.fault({"cloud": "aws", "errors": [{"code": "DependencyTimeoutException", "rate": 0.5}]})
    kms = aws_client(emulator_url)
    failures = 0
    for _ in range(60):
        try:
            kms.list_aliases()
        except Exception as e:  # botocore ClientError
            assert e.response["Error"]["Code"] == "DependencyTimeoutException"
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            failures += 1
    assert 10 <= failures <= 50
    assert admin.tally("aws", "ListAliases")["injected"] == failures


def test_hang_outage_times_the_client_out(emulator_url, admin):
    admin.fault({"cloud": "alibaba", "outage": "hang"})
    ali = ali_client(emulator_url)
    ali._read_timeout = 1000  # ms
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        ali.list_aliases(m.ListAliasesRequest())
    assert not isinstance(e.value, ClientException)  # no HTTP answer: a transport error
    assert 0.9 <= time.monotonic() - t0 < 10
    assert admin.tally("alibaba", "ListAliases")["outages"] == 1


def test_unrecognised_request_is_404(emulator_url, admin):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(emulator_url + "/something", timeout=5)
    assert e.value.code == 404


# ----- a second instance with non-default options -----

ALT_AK, ALT_SK, ALT_ACCOUNT = "LTAI5tAltKey000001", "AltSecret000000000000000000000001", "5555666677778888"


@pytest.fixture(scope="module")
def alt(tmp_path_factory):
    creds = tmp_path_factory.mktemp("creds") / "credentials.toml"
    creds.write_text(
        f"""
[[credential]]
cloud = "alibaba"
access_key_id = "{ALT_AK}"
secret = "{ALT_SK}"
account = "{ALT_ACCOUNT}"

[[credential]]
cloud = "huawei"
access_key_id = "{HW_AK}"
secret = "{HW_SK}"
"""
    )
    region_port = free_port()
    server = start_emulator(
        "--credentials", str(creds),
        "--region-listen", f"127.0.0.1:{region_port}=cn-shanghai",
        "--huawei-alias-prefix", "optional",
    )
    yield server.url, f"http://127.0.0.1:{region_port}"
    server.stop()


def test_credentials_file_replaces_the_defaults(alt):
    url, _ = alt
    with pytest.raises(ClientException) as e:
        ali_client(url).list_aliases(m.ListAliasesRequest())  # the built-in key is gone
    assert e.value.code == "InvalidAccessKeyId.NotFound"
    ali = ali_client(url, ak=ALT_AK, sk=ALT_SK)
    key = ali.create_key(m.CreateKeyRequest()).body.key_metadata
    assert key.arn.startswith(f"acs:kms:cn-hangzhou:{ALT_ACCOUNT}:key/")


def test_region_listener_sets_the_region(alt):
    url, regional = alt
    ali = ali_client(regional, ak=ALT_AK, sk=ALT_SK)
    key = ali.create_key(m.CreateKeyRequest()).body.key_metadata.key_id
    ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/sh", key_id=key))
    hw = hw_client(regional)
    r = hw.create_key(hm.CreateKeyRequest(body=hm.CreateKeyRequestBody(key_alias="k")))
    assert r.key_info.region_id == "cn-shanghai"
    state = Admin(url).state()
    assert state["alibaba"][ALT_ACCOUNT]["cn-shanghai"]["aliases"] == {"alias/app/sh": key}
    assert "cn-shanghai" in state["huawei"][HW_PROJECT]


def test_huawei_prefix_optional(alt):
    url, _ = alt
    hw = hw_client(url)
    k = hw.create_key(hm.CreateKeyRequest(body=hm.CreateKeyRequestBody(key_alias="k2"))).key_info.key_id
    r = hw.create_alias(hm.CreateAliasRequest(body=hm.CreateAliasRequestBody(key_id=k, alias="kms-1234")))
    assert r.alias_urn.endswith(":alias:kms-1234")
