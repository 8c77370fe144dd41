"""The official Alibaba Cloud SDKs against the emulator: the Tea SDK (alibabacloud_kms20160120) with
both its signatures (ACS3-HMAC-SHA256, and RPC v1 HMAC-SHA1 via signature_algorithm="v2") and the
legacy aliyun-python-sdk-core. Every success must parse into the SDK's models and every error into
the documented code (emulator/reference/kms-alias-apis.md §3)."""

import pytest
from alibabacloud_kms20160120 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

from emu import ALI_ACCOUNT, ALI_REGION, ali_client, ali_legacy


@pytest.fixture(params=["acs3", "rpc_v1"])
def ali(request, emulator_url, admin):
    return ali_client(emulator_url, signing=request.param)


def err(call):
    """The SDK exception of a failing call: (code, HTTP status, parsed body)."""
    with pytest.raises((ClientException, ServerException)) as e:
        call()
    return e.value.code, e.value.status_code, e.value.data


def new_key(ali):
    return ali.create_key(m.CreateKeyRequest(description="t")).body.key_metadata.key_id


def aliases(ali, page_size=100):
    body = ali.list_aliases(m.ListAliasesRequest(page_number=1, page_size=page_size)).body
    return {a.alias_name: a.key_id for a in body.aliases.alias}


def test_alias_lifecycle(ali):
    create = ali.create_key(m.CreateKeyRequest(description="one")).body
    assert create.request_id
    md = create.key_metadata
    assert md.key_state == "Enabled" and md.arn == f"acs:kms:{ALI_REGION}:{ALI_ACCOUNT}:key/{md.key_id}"
    k1, k2 = md.key_id, new_key(ali)

    r = ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/one", key_id=k1))
    assert r.status_code == 200 and r.body.request_id
    assert aliases(ali) == {"alias/app/one": k1}
    listed = ali.list_aliases(m.ListAliasesRequest()).body.aliases.alias[0]
    assert listed.alias_arn == f"acs:kms:{ALI_REGION}:{ALI_ACCOUNT}:alias/app/one"
    assert ali.describe_key(m.DescribeKeyRequest(key_id="alias/app/one")).body.key_metadata.key_id == k1

    ali.update_alias(m.UpdateAliasRequest(alias_name="alias/app/one", key_id=k2))
    by_key = ali.list_aliases_by_key_id(m.ListAliasesByKeyIdRequest(key_id=k2)).body
    assert by_key.total_count == 1 and by_key.aliases.alias[0].alias_name == "alias/app/one"
    assert ali.list_aliases_by_key_id(m.ListAliasesByKeyIdRequest(key_id=k1)).body.total_count == 0

    ali.delete_alias(m.DeleteAliasRequest(alias_name="alias/app/one"))
    assert aliases(ali) == {}


def test_errors(ali):
    k = new_key(ali)
    ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/dup", key_id=k))
    missing_key = "key-doesnotexist000000000"
    cases = [
        (lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/dup", key_id=k)), "AliasAlreadyExists", 400),
        (lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/n", key_id=missing_key)), "Forbidden.KeyNotFound", 404),
        (lambda: ali.update_alias(m.UpdateAliasRequest(alias_name="alias/app/missing", key_id=k)), "Forbidden.AliasNotFound", 404),
        (lambda: ali.update_alias(m.UpdateAliasRequest(alias_name="alias/app/dup", key_id=missing_key)), "Forbidden.KeyNotFound", 404),
        (lambda: ali.delete_alias(m.DeleteAliasRequest(alias_name="alias/app/missing")), "Forbidden.AliasNotFound", 404),
        (lambda: ali.describe_key(m.DescribeKeyRequest(key_id=missing_key)), "Forbidden.KeyNotFound", 404),
        (lambda: ali.describe_key(m.DescribeKeyRequest(key_id="alias/app/missing")), "Forbidden.AliasNotFound", 404),
        (lambda: ali.list_aliases_by_key_id(m.ListAliasesByKeyIdRequest(key_id=missing_key)), "Forbidden.KeyNotFound", 404),
        (lambda: ali.create_alias(m.CreateAliasRequest(alias_name="nope", key_id=k)), "InvalidParameter", 400),
        (lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/bad name", key_id=k)), "InvalidParameter", 400),
        (lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/acs/ecs", key_id=k)), "InvalidParameter", 400),
        (lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/" + "x" * 256, key_id=k)), "InvalidParameter", 400),
        (lambda: ali.create_alias(m.CreateAliasRequest(key_id=k)), "MissingAliasName", 400),
        (lambda: ali.list_aliases(m.ListAliasesRequest(page_size=101)), "InvalidParameter", 400),
    ]
    for call, code, status in cases:
        got = err(call)
        assert (got[0], got[1]) == (code, status), got
        assert got[2]["Code"] == code and got[2]["RequestId"]
    ali.create_alias(m.CreateAliasRequest(alias_name="alias/" + "x" * 255, key_id=k))  # the longest name


def test_key_states(ali):
    k, k2 = new_key(ali), new_key(ali)
    ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/s", key_id=k2))
    ali.disable_key(m.DisableKeyRequest(key_id=k))
    assert ali.describe_key(m.DescribeKeyRequest(key_id=k)).body.key_metadata.key_state == "Disabled"
    ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/on-disabled", key_id=k))  # allowed
    ali.enable_key(m.EnableKeyRequest(key_id=k))
    ali.schedule_key_deletion(m.ScheduleKeyDeletionRequest(key_id=k, pending_window_in_days=7))
    md = ali.describe_key(m.DescribeKeyRequest(key_id=k)).body.key_metadata
    assert md.key_state == "PendingDeletion" and md.delete_date
    assert err(lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/x", key_id=k)))[:2] == ("Rejected.StateModifiedFailed", 409)
    assert err(lambda: ali.update_alias(m.UpdateAliasRequest(alias_name="alias/app/s", key_id=k)))[:2] == ("Rejected.PendingDeletion", 409)
    assert err(lambda: ali.enable_key(m.EnableKeyRequest(key_id=k)))[:2] == ("Rejected.PendingDeletion", 409)
    ali.cancel_key_deletion(m.CancelKeyDeletionRequest(key_id=k))
    assert ali.describe_key(m.DescribeKeyRequest(key_id=k)).body.key_metadata.key_state == "Enabled"
    ali.disable_key(m.DisableKeyRequest(key_id=k))
    assert err(lambda: ali.cancel_key_deletion(m.CancelKeyDeletionRequest(key_id=k)))[:2] == ("Rejected.Disabled", 409)
    assert err(lambda: ali.schedule_key_deletion(m.ScheduleKeyDeletionRequest(key_id=k, pending_window_in_days=3)))[0] == "InvalidParameter"


def test_paging(ali):
    k = new_key(ali)
    names = [f"alias/app/p{i:02d}" for i in range(23)]
    for n in names:
        ali.create_alias(m.CreateAliasRequest(alias_name=n, key_id=k))
    seen, page = [], 1
    while True:
        body = ali.list_aliases(m.ListAliasesRequest(page_number=page, page_size=5)).body
        assert body.total_count == 23 and body.page_number == page and body.page_size == 5
        seen += [a.alias_name for a in body.aliases.alias]
        if page * body.page_size >= body.total_count:
            break
        page += 1
    assert page == 5 and seen == sorted(names)
    # Default page size 10; ListAliasesByKeyId pages the same way.
    assert len(ali.list_aliases(m.ListAliasesRequest()).body.aliases.alias) == 10
    by_key = ali.list_aliases_by_key_id(m.ListAliasesByKeyIdRequest(key_id=k, page_number=3, page_size=10)).body
    assert by_key.total_count == 23 and [a.alias_name for a in by_key.aliases.alias] == sorted(names)[20:]


@pytest.mark.parametrize("signing", ["acs3", "rpc_v1"])
def test_wrong_secret_is_signature_mismatch(emulator_url, admin, signing):
    bad = ali_client(emulator_url, signing=signing, sk="not-the-secret")
    code, status, data = err(lambda: bad.list_aliases(m.ListAliasesRequest()))
    assert (code, status) == ("SignatureDoesNotMatch", 400)
    unknown = ali_client(emulator_url, signing=signing, ak="LTAI5tUnknownKey", sk="x")
    assert err(lambda: unknown.list_aliases(m.ListAliasesRequest()))[:2] == ("InvalidAccessKeyId.NotFound", 404)
    assert admin.tally("alibaba", "ListAliases")["auth_failures"] == 2


def test_throttling_is_rejected_throttling(ali, admin):
    k = new_key(ali)
    admin.fault({"cloud": "alibaba", "throttle": {"write": 1}, "throttle_burst": 1})
    ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/t1", key_id=k))
    code, status, data = err(lambda: ali.create_alias(m.CreateAliasRequest(alias_name="alias/app/t2", key_id=k)))
    assert (code, status, data["Message"]) == ("Rejected.Throttling", 429, "QPS Limit Exceeded")
    assert admin.tally("alibaba", "CreateAlias")["throttled"] == 1


def test_injected_server_error(ali, admin):
    admin.fault({"cloud": "alibaba", "errors": [{"code": "InternalFailure", "count": 1}]})
    with pytest.raises(ServerException) as e:  # 5xx: the SDK's ServerException
        ali.list_aliases(m.ListAliasesRequest())
    assert (e.value.code, e.value.status_code) == ("InternalFailure", 500)
    ali.list_aliases(m.ListAliasesRequest())


def test_region_from_region_id_and_listener(emulator_url, admin):
    """The legacy SDK sends RegionId: it picks the region. The Tea SDK sends none: the default."""
    from aliyunsdkkms.request.v20160120.CreateAliasRequest import CreateAliasRequest
    from aliyunsdkkms.request.v20160120.ListAliasesRequest import ListAliasesRequest

    k_sh = admin.key("alibaba", account=ALI_ACCOUNT, region="cn-shanghai")
    legacy_sh = ali_legacy(emulator_url, region="cn-shanghai")
    req = CreateAliasRequest()
    req.set_AliasName("alias/app/sh")
    req.set_KeyId(k_sh)
    assert legacy_sh(req)["RequestId"]
    assert legacy_sh(ListAliasesRequest())["Aliases"]["Alias"][0]["AliasName"] == "alias/app/sh"
    state = admin.state(cloud="alibaba")["alibaba"][ALI_ACCOUNT]
    assert state["cn-shanghai"]["aliases"] == {"alias/app/sh": k_sh}
    assert aliases(ali_client(emulator_url)) == {}  # cn-hangzhou


def test_legacy_sdk_errors(emulator_url, admin):
    from aliyunsdkcore.acs_exception.exceptions import ServerException as LegacyServerException
    from aliyunsdkkms.request.v20160120.DeleteAliasRequest import DeleteAliasRequest
    from aliyunsdkkms.request.v20160120.UpdateAliasRequest import UpdateAliasRequest

    legacy = ali_legacy(emulator_url)
    k = admin.key("alibaba", account=ALI_ACCOUNT, region=ALI_REGION)
    admin.alias("alibaba", "alias/app/leg", k, account=ALI_ACCOUNT, region=ALI_REGION)
    req = UpdateAliasRequest()
    req.set_AliasName("alias/app/leg")
    req.set_KeyId("key-missing0000000000000")
    with pytest.raises(LegacyServerException) as e:
        legacy(req)
    assert (e.value.get_error_code(), e.value.get_http_status()) == ("Forbidden.KeyNotFound", 404)
    req = DeleteAliasRequest()
    req.set_AliasName("alias/app/leg")
    legacy(req)
    with pytest.raises(LegacyServerException) as e:
        legacy(req)
    assert e.value.get_error_code() == "Forbidden.AliasNotFound"
