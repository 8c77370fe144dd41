"""huaweicloudsdkcore's own credential providers and huaweicloudsdkiam's assume-agency against the emulator's
Huawei IAM (POST /v3.0/OS-CREDENTIAL/securitytokens) and ECS metadata (/meta-data/latest/api/token +
/openstack/latest/securitykey), then KMS calls through huaweicloudsdkkms with the temporary keys they give: the
emulator speaks the wire format the official SDK parses, and its KMS accepts (and expires) those keys as the
daemon expects (APIGW.0307 once the token is stale).

The SDK hard-codes the metadata endpoint (MetadataAccessor._METADATA_ENDPOINT = "http://169.254.169.254", no
setting or environment variable), so the tests point that class attribute at the emulator."""

import time

import pytest
from huaweicloudsdkcore.auth import internal
from huaweicloudsdkcore.auth.credentials import BasicCredentials, GlobalCredentials
from huaweicloudsdkcore.auth.provider import MetadataCredentialProvider
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkiam.v3 import IamClient
from huaweicloudsdkiam.v3 import model as im
from huaweicloudsdkkms.v2 import KmsClient
from huaweicloudsdkkms.v2 import model as hm

from conftest import start_emulator
from emu import HW_AK, HW_DOMAIN, HW_PROJECT, HW_SK

AGENCY, AGENCY_DOMAIN = "aliassync_kms", "ops_account"


@pytest.fixture
def metadata_at(monkeypatch):
    """Points the SDK's MetadataAccessor at an emulator URL."""

    def point(url):
        monkeypatch.setattr(internal.MetadataAccessor, "_METADATA_ENDPOINT", url)

    return point


def http_config():
    cfg = HttpConfig.get_default_config()
    cfg.timeout = (5, 10)
    return cfg


def kms(url, credentials):
    return KmsClient.new_builder().with_http_config(http_config()).with_credentials(credentials).with_endpoints([url]).build()


def iam(url, credentials):
    return IamClient.new_builder().with_http_config(http_config()).with_credentials(credentials).with_endpoints([url]).build()


def assume(url, credentials, duration=900):
    role = im.IdentityAssumerole(agency_name=AGENCY, domain_name=AGENCY_DOMAIN, duration_seconds=duration)
    body = im.CreateTemporaryAccessKeyByAgencyRequestBody(
        auth=im.AgencyAuth(identity=im.AgencyAuthIdentity(methods=["assume_role"], assume_role=role))
    )
    return iam(url, credentials).create_temporary_access_key_by_agency(
        im.CreateTemporaryAccessKeyByAgencyRequest(body=body)
    ).credential


def temporary(c, project=HW_PROJECT):
    return BasicCredentials(c.access, c.secret, project).with_security_token(c.securitytoken)


def new_key(client):
    return client.create_key(hm.CreateKeyRequest(body=hm.CreateKeyRequestBody(key_alias="k"))).key_info.key_id


def aliases(client):
    return [a.alias for a in client.list_aliases(hm.ListAliasesRequest(limit="100")).body[0].aliases]


def create_alias(client, alias, key):
    client.create_alias(hm.CreateAliasRequest(body=hm.CreateAliasRequestBody(key_id=key, alias=alias)))


def err(call):
    with pytest.raises(ClientRequestException) as e:
        call()
    return e.value.status_code, e.value.error_code


def test_metadata_provider_keys_work_for_kms(emulator_url, admin, metadata_at):
    metadata_at(emulator_url)
    provider = MetadataCredentialProvider.get_basic_credential_metadata_provider()
    provider.project_id = HW_PROJECT
    creds = provider.get_credentials()
    assert creds.ak and creds.ak != HW_AK and creds.security_token
    # expires_at parsed with the SDK's own format (%Y-%m-%dT%H:%M:%S.%fZ): about an hour ahead.
    assert 3000 < creds._expire_at - internal.time_utils.get_timestamp_utc() <= 3600
    client = kms(emulator_url, creds)
    create_alias(client, "alias/cred/metadata", new_key(client))
    assert "alias/cred/metadata" in aliases(client)
    # The SDK asked for a metadata token first and sent it: the emulator requires it.
    assert admin.tally("huawei", "GetMetadataToken")["ok"] >= 1
    keys = admin.tally("huawei", "GetSecurityKey")
    assert keys["ok"] >= 1 and keys["auth_failures"] == 0, keys


def test_assume_agency_with_static_and_metadata_base(emulator_url, admin, metadata_at):
    # Long-lived base keys (GlobalCredentials: IAM is a global service).
    c = assume(emulator_url, GlobalCredentials(HW_AK, HW_SK, HW_DOMAIN))
    assert c.access and c.secret and c.securitytoken and c.expires_at.endswith("Z")
    client = kms(emulator_url, temporary(c))
    key = new_key(client)
    create_alias(client, "alias/cred/agency", key)
    assert "alias/cred/agency" in aliases(client)

    # Temporary base keys from ECS metadata: the IAM call carries (and signs) their X-Security-Token.
    metadata_at(emulator_url)
    provider = MetadataCredentialProvider.get_global_credential_metadata_provider()
    provider.domain_id = HW_DOMAIN
    base = provider.get_credentials()
    c2 = assume(emulator_url, base, duration=3600)
    assert c2.access != c.access
    assert "alias/cred/agency" in aliases(kms(emulator_url, temporary(c2)))
    assert admin.tally("huawei", "CreateTemporaryAccessKeyByAgency")["ok"] == 2


def test_assume_agency_refusals(emulator_url, admin):
    assert err(lambda: assume(emulator_url, GlobalCredentials(HW_AK, "wrong-secret", HW_DOMAIN))) == (401, "APIGW.0301")
    assert err(lambda: assume(emulator_url, GlobalCredentials("HPUANOSUCHKEY", HW_SK, HW_DOMAIN))) == (401, "APIGW.0301")
    assert err(lambda: assume(emulator_url, GlobalCredentials(HW_AK, HW_SK, HW_DOMAIN), duration=60))[0] == 400
    c = assume(emulator_url, GlobalCredentials(HW_AK, HW_SK, HW_DOMAIN))
    # A temporary key without its token, or with another session's token, is refused.
    no_token = BasicCredentials(c.access, c.secret, HW_PROJECT)
    assert err(lambda: aliases(kms(emulator_url, no_token))) == (401, "APIGW.0301")
    other = assume(emulator_url, GlobalCredentials(HW_AK, HW_SK, HW_DOMAIN))
    wrong = BasicCredentials(c.access, c.secret, HW_PROJECT).with_security_token(other.securitytoken)
    assert err(lambda: aliases(kms(emulator_url, wrong))) == (401, "APIGW.0301")


def test_expired_keys_answer_apigw_0307_and_the_metadata_provider_refreshes(metadata_at):
    # Every issued key lives 2 s on this emulator.
    server = start_emulator("--sts-session-seconds", "2")
    try:
        url = server.url
        c = assume(url, GlobalCredentials(HW_AK, HW_SK, HW_DOMAIN))
        fixed = kms(url, temporary(c))
        aliases(fixed)
        time.sleep(3)
        assert err(lambda: aliases(fixed)) == (401, "APIGW.0307")

        # The SDK's metadata credentials refresh themselves (it renews keys within 40 min of expiry).
        metadata_at(url)
        provider = MetadataCredentialProvider.get_basic_credential_metadata_provider()
        provider.project_id = HW_PROJECT
        refreshing = kms(url, provider.get_credentials())
        aliases(refreshing)
        time.sleep(3)
        aliases(refreshing)
    finally:
        server.stop()
