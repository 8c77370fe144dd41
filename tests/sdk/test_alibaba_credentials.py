"""The official `alibabacloud-credentials` library against the emulator's Alibaba STS and ECS metadata: its ECS
RAM role provider (IMDSv2 token, role discovery) and its RAM role ARN provider (AssumeRole, RPC v1 signed, with
an ExternalId and on top of ECS session credentials) must accept the emulator's answers, and the temporary
credentials they return must work against the emulator's KMS through the official KMS SDK (both signatures),
while a wrong or expired security token is refused with Alibaba's codes.

The library hard-codes the metadata host (100.100.100.200); the test points the provider's private host field
at the emulator, which is the only thing changed. Its STS endpoint may carry a scheme (`http://…`), which
Tea's URL builder keeps, so no patching is needed there."""

import time

import pytest
from alibabacloud_credentials.client import Client as CredClient
from alibabacloud_credentials.provider import EcsRamRoleCredentialsProvider, RamRoleArnCredentialsProvider
from alibabacloud_kms20160120 import models as m
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

from conftest import start_emulator
from emu import ALI_AK, ALI_REGION, ALI_SK, host_port

ECS_ROLE = "aliassync-ecs"
ECS_ACCOUNT = "1234567890123456"
ROLE_ARN = "acs:ram::2222222222222222:role/aliassync-kms"
EXTERNAL_ID = "xid-0123456789"


@pytest.fixture(scope="module")
def emu():
    """An emulator of this module's own: the role below requires an ExternalId."""
    server = start_emulator("--alibaba-role-external-id", f"{ROLE_ARN}={EXTERNAL_ID}")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def short_emu():
    """An emulator whose sessions live 3 s, to see the KMS refuse an expired token."""
    server = start_emulator("--sts-session-seconds", "3")
    yield server.url
    server.stop()


def ecs_provider(url, role_name=None):
    p = EcsRamRoleCredentialsProvider(role_name=role_name, disable_imds_v1=True, async_update_enabled=False)
    # Name-mangled private field: the metadata host, a constant in the library.
    p._EcsRamRoleCredentialsProvider__metadata_service_host = host_port(url)
    return p


def kms(url, provider, signing="acs3"):
    cfg = open_api_models.Config(
        credential=CredClient(provider=provider), region_id=ALI_REGION, endpoint=host_port(url), protocol="http"
    )
    cfg.read_timeout, cfg.connect_timeout = 10000, 5000
    if signing == "rpc_v1":
        cfg.signature_algorithm = "v2"
    return KmsClient(cfg)


def sts_identity(url, provider):
    """GetCallerIdentity through the OpenAPI core, as the generated STS SDK calls it (ACS3, form body)."""
    from alibabacloud_tea_openapi.client import Client as OpenApi
    from alibabacloud_tea_openapi.utils_models import OpenApiRequest, Params
    from darabonba.runtime import RuntimeOptions

    cfg = open_api_models.Config(credential=CredClient(provider=provider), endpoint=host_port(url), protocol="http")
    params = Params(
        action="GetCallerIdentity", version="2015-04-01", protocol="HTTP", pathname="/", method="POST",
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json",
    )
    return OpenApi(cfg).call_api(params, OpenApiRequest(), RuntimeOptions())["body"]


def alias_roundtrip(client, name):
    key = client.create_key(m.CreateKeyRequest(description="creds")).body.key_metadata.key_id
    client.create_alias(m.CreateAliasRequest(alias_name=name, key_id=key))
    listed = client.list_aliases(m.ListAliasesRequest(page_size=100)).body.aliases.alias
    assert {a.alias_name: a.key_id for a in listed}.get(name) == key
    return key


def kms_error(call):
    with pytest.raises((ClientException, ServerException)) as e:
        call()
    return e.value.code, e.value.status_code


def test_ecs_ram_role_provider(emu):
    p = ecs_provider(emu)  # role discovered from the metadata listing
    c = p.get_credentials()
    assert c.get_access_key_id().startswith("STS.") and c.get_access_key_secret() and c.get_security_token()
    assert c.get_provider_name() == "ecs_ram_role"
    for signing in ("acs3", "rpc_v1"):
        alias_roundtrip(kms(emu, p, signing), f"alias/creds/ecs-{signing}")
    ident = sts_identity(emu, p)
    assert ident["AccountId"] == ECS_ACCOUNT and ident["IdentityType"] == "AssumedRoleUser"
    assert ident["Arn"].startswith(f"acs:ram::{ECS_ACCOUNT}:assumed-role/{ECS_ROLE}/")
    # A named role that the instance does not have is the metadata's 404.
    with pytest.raises(Exception, match="HttpCode=404"):
        ecs_provider(emu, role_name="other-role").get_credentials()


def test_ram_role_arn_provider(emu):
    p = RamRoleArnCredentialsProvider(
        access_key_id=ALI_AK, access_key_secret=ALI_SK, role_arn=ROLE_ARN, role_session_name="sdk-test",
        external_id=EXTERNAL_ID, duration_seconds=900, sts_endpoint=emu,
    )
    c = p.get_credentials()
    assert c.get_access_key_id().startswith("STS.") and c.get_security_token()
    assert c.get_expiration() - time.time() > 800
    for signing in ("acs3", "rpc_v1"):
        alias_roundtrip(kms(emu, p, signing), f"alias/creds/role-{signing}")
    ident = sts_identity(emu, p)
    assert ident["Arn"] == "acs:ram::2222222222222222:assumed-role/aliassync-kms/sdk-test"
    assert ident["AccountId"] == "2222222222222222"


def test_ram_role_arn_refusals(emu):
    def assume(**kw):
        args = dict(access_key_id=ALI_AK, access_key_secret=ALI_SK, role_arn=ROLE_ARN,
                    role_session_name="sdk-test", sts_endpoint=emu)
        args.update(kw)
        return RamRoleArnCredentialsProvider(**args).get_credentials()

    with pytest.raises(Exception, match="http_code: 403.*NoPermission"):
        assume(external_id="wrong")
    with pytest.raises(Exception, match="http_code: 404.*InvalidAccessKeyId.NotFound"):
        assume(access_key_id="LTAI5tUnknownKey", external_id=EXTERNAL_ID)
    with pytest.raises(Exception, match="http_code: 400.*SignatureDoesNotMatch"):
        assume(access_key_secret="wrong-secret", external_id=EXTERNAL_ID)


def test_role_chained_on_ecs_session(emu):
    """AssumeRole signed with the ECS session's keys carries its SecurityToken; the emulator requires it."""
    p = RamRoleArnCredentialsProvider(
        credentials_provider=ecs_provider(emu), role_arn="acs:ram::3333333333333333:role/chained",
        role_session_name="chain", sts_endpoint=emu,
    )
    alias_roundtrip(kms(emu, p), "alias/creds/chained")
    assert sts_identity(emu, p)["AccountId"] == "3333333333333333"


def test_kms_refuses_wrong_and_expired_tokens(short_emu):
    from alibabacloud_credentials.provider import StaticSTSCredentialsProvider

    c = ecs_provider(short_emu).get_credentials()
    wrong = StaticSTSCredentialsProvider(
        access_key_id=c.get_access_key_id(), access_key_secret=c.get_access_key_secret(), security_token="nope"
    )
    assert kms_error(lambda: kms(short_emu, wrong).list_aliases(m.ListAliasesRequest())) == (
        "InvalidSecurityToken.MismatchWithAccessKey", 400)
    right = StaticSTSCredentialsProvider(
        access_key_id=c.get_access_key_id(), access_key_secret=c.get_access_key_secret(),
        security_token=c.get_security_token(),
    )
    kms(short_emu, right).list_aliases(m.ListAliasesRequest())
    time.sleep(max(0.0, c.get_expiration() - time.time()) + 1.5)
    for signing in ("acs3", "rpc_v1"):
        assert kms_error(lambda: kms(short_emu, right, signing).list_aliases(m.ListAliasesRequest())) == (
            "InvalidSecurityToken.Expired", 400)
