"""Helpers for the SDK fidelity tests: the emulator's admin API and official-SDK clients pointed at
127.0.0.1. The fake credentials are the emulator's built-in ones (emulator/reference/test-peers.md)."""

import json
import urllib.error
import urllib.request

AWS_AK, AWS_SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
AWS_ACCOUNT = "123456789012"
AWS_AK2, AWS_SK2 = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_ACCOUNT2 = "111122223333"
ALI_AK, ALI_SK = "LTAI5tFakeAccessKeyId01", "FakeAccessKeySecret0123456789abcd"
ALI_ACCOUNT = "1234567890123456"
ALI_REGION = "cn-hangzhou"  # the emulator's default Alibaba region
HW_AK, HW_SK = "HPUAFAKEACCESSKEY0001", "FakeSecretKey0123456789abcdefghijklmnopq"
HW_DOMAIN = "3bab8e245e854f68af5967c00dd43127"
HW_PROJECT = "0123456789abcdef0123456789abcdef"
HW_PROJECT2 = "fedcba9876543210fedcba9876543210"
HW_REGION = "cn-north-4"  # the emulator's default Huawei region


class Admin:
    """The emulator's /_emulator admin API."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"admin {method} {path}: HTTP {e.code}: {e.read()!r}") from None

    def reset(self):
        return self.call("POST", "/_emulator/reset")

    def state(self, **query):
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return self.call("GET", "/_emulator/state" + (f"?{q}" if q else ""))

    def key(self, cloud, **fields):
        """Creates a key (or sets an existing one's state); returns the key id."""
        return self.call("POST", "/_emulator/keys", {"cloud": cloud, **fields})["key_id"]

    def alias(self, cloud, alias, key_id, **fields):
        return self.call("POST", "/_emulator/aliases", {"cloud": cloud, "alias": alias, "key_id": key_id, **fields})

    def fault(self, rule):
        return self.call("POST", "/_emulator/faults", rule)

    def clear_faults(self):
        return self.call("DELETE", "/_emulator/faults")

    def calls(self, cloud=None):
        return self.call("GET", "/_emulator/calls" + (f"?cloud={cloud}" if cloud else ""))

    def tally(self, cloud, operation):
        """Counters of one operation summed over accounts and regions."""
        out = {"calls": 0, "ok": 0, "throttled": 0, "injected": 0, "outages": 0, "auth_failures": 0}
        for row in self.calls(cloud)["calls"]:
            if row["operation"] == operation:
                for k in out:
                    out[k] += row[k]
        return out


def aws_client(url, region="us-east-1", ak=AWS_AK, sk=AWS_SK):
    import boto3
    from botocore.config import Config

    # One attempt: the tests assert on each answer, and botocore would retry throttling and 5xx.
    cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10)
    return boto3.client(
        "kms", endpoint_url=url, region_name=region, aws_access_key_id=ak, aws_secret_access_key=sk, config=cfg
    )


def host_port(url):
    return url.split("://", 1)[1].rstrip("/")


def ali_client(url, signing="acs3", ak=ALI_AK, sk=ALI_SK, region=ALI_REGION):
    """The Tea SDK (alibabacloud_kms20160120). signing: "acs3" (its default) or "rpc_v1"
    (signature_algorithm="v2": HMAC-SHA1 in the query)."""
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_tea_openapi import models as open_api_models

    # protocol="http" and a scheme-less endpoint, as test-peers.md found necessary.
    cfg = open_api_models.Config(
        access_key_id=ak, access_key_secret=sk, region_id=region, endpoint=host_port(url), protocol="http"
    )
    cfg.read_timeout = 10000
    cfg.connect_timeout = 5000
    if signing == "rpc_v1":
        cfg.signature_algorithm = "v2"
    return Client(cfg)


def ali_legacy(url, ak=ALI_AK, sk=ALI_SK, region=ALI_REGION):
    """The legacy aliyun-python-sdk-core client; returns do(request) -> dict."""
    from aliyunsdkcore.client import AcsClient

    client = AcsClient(ak, sk, region)

    def do(req):
        req.set_endpoint(host_port(url))
        req.set_protocol_type("http")
        return json.loads(client.do_action_with_exception(req))

    return do


def hw_client(url, project=HW_PROJECT, ak=HW_AK, sk=HW_SK):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkkms.v2 import KmsClient

    cfg = HttpConfig.get_default_config()
    cfg.timeout = (5, 10)
    return (
        KmsClient.new_builder()
        .with_http_config(cfg)
        .with_credentials(BasicCredentials(ak, sk, project))
        .with_endpoints([url])
        .build()
    )
