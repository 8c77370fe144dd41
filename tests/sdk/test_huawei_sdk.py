"""The official Huawei Cloud SDK (huaweicloudsdkkms v2) against the emulator: every success parses
into the SDK's models and every error into ClientRequestException/ServerResponseException with the
documented error_code (emulator/reference/kms-alias-apis.md §4; codes the docs do not give for alias
operations are the emulator's choice, listed in tests/sdk/README.md)."""

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException, ServerResponseException
from huaweicloudsdkkms.v2 import model as hm

from emu import HW_AK, HW_DOMAIN, HW_PROJECT, HW_PROJECT2, HW_REGION, hw_client


@pytest.fixture
def hw(emulator_url, admin):
    return hw_client(emulator_url)


def err(call):
    with pytest.raises((ClientRequestException, ServerResponseException)) as e:
        call()
    return e.value.error_code, e.value.status_code, e.value.error_msg


def new_key(hw, name=None):
    import uuid

    body = hm.CreateKeyRequestBody(key_alias=name or f"k-{uuid.uuid4().hex[:8]}")
    return hw.create_key(hm.CreateKeyRequest(body=body)).key_info.key_id


def create_alias(hw, alias, key):
    return hw.create_alias(hm.CreateAliasRequest(body=hm.CreateAliasRequestBody(key_id=key, alias=alias)))


def associate(hw, alias, key):
    return hw.associate_alias(hm.AssociateAliasRequest(body=hm.AssociateAliasRequestBody(alias=alias, target_key_id=key)))


def delete_alias(hw, key, *aliases):
    return hw.delete_alias(hm.DeleteAliasRequest(body=hm.DeleteAliasRequestBody(key_id=key, aliases=list(aliases))))


def list_aliases(hw, **kw):
    body = hw.list_aliases(hm.ListAliasesRequest(**kw)).body
    assert len(body) == 1  # the model says list[ListAliasResponseBody]; the API answers one object
    return body[0]


def describe(hw, key):
    return hw.list_key_detail(hm.ListKeyDetailRequest(body=hm.OperateKeyRequestBody(key_id=key))).key_info


def test_alias_lifecycle(hw):
    created = hw.create_key(hm.CreateKeyRequest(body=hm.CreateKeyRequestBody(key_alias="first", key_description="d")))
    k1 = created.key_info.key_id
    assert created.key_info.domain_id == HW_DOMAIN
    k2 = new_key(hw)
    info = describe(hw, k1)
    assert (info.key_state, info.key_alias, info.domain_id, info.realm) == ("2", "first", HW_DOMAIN, HW_REGION)

    r = create_alias(hw, "alias/app-one", k1)
    assert r.status_code == 201
    assert (r.alias, r.key_id, r.domain_id) == ("alias/app-one", k1, HW_DOMAIN)
    assert r.alias_urn == f"kms:{HW_REGION}:{HW_DOMAIN}:alias:alias/app-one"
    assert r.create_time and r.update_time

    page = list_aliases(hw, limit="10")
    assert [(a.alias, a.key_id) for a in page.aliases] == [("alias/app-one", k1)]
    assert page.page_info.next_marker == "" and page.page_info.current_count == 1

    r = associate(hw, "alias/app-one", k2)
    assert r.status_code == 200 and r.key_id == k2
    assert [a.alias for a in list_aliases(hw, key_id=k2).aliases] == ["alias/app-one"]
    assert list_aliases(hw, key_id=k1).aliases == []

    r = delete_alias(hw, k2, "alias/app-one")
    assert r.status_code == 204
    assert list_aliases(hw).aliases == []


def test_errors(hw):
    k = new_key(hw)
    create_alias(hw, "alias/app-dup", k)
    missing = "00000000-0000-0000-0000-000000000000"
    cases = [
        (lambda: create_alias(hw, "alias/app-dup", k), "KMS.1104", 400),
        (lambda: create_alias(hw, "alias/app-new", missing), "KMS.0207", 404),
        (lambda: create_alias(hw, "alias/app-new", "not-a-key-id"), "KMS.0205", 400),
        (lambda: create_alias(hw, "no-prefix", k), "KMS.0308", 400),
        (lambda: create_alias(hw, "alias/bad name", k), "KMS.0308", 400),
        (lambda: associate(hw, "alias/app-missing", k), "KMS.0207", 404),
        (lambda: associate(hw, "alias/app-dup", missing), "KMS.0207", 404),
        (lambda: delete_alias(hw, k, "alias/app-missing"), "KMS.0207", 404),
        (lambda: delete_alias(hw, missing, "alias/app-dup"), "KMS.0207", 404),
        (lambda: describe(hw, missing), "KMS.0207", 404),
        (lambda: list_aliases(hw, key_id=missing), "KMS.0207", 404),
        (lambda: list_aliases(hw, limit="0"), "KMS.1601", 400),
        (lambda: list_aliases(hw, limit="10", marker="x"), "KMS.1602", 400),
        (lambda: hw.create_key(hm.CreateKeyRequest(body=hm.CreateKeyRequestBody())), "KMS.0204", 400),
    ]
    for call, code, status in cases:
        got = err(call)
        assert got[:2] == (code, status), got
    # Deleting is all-or-nothing: one unknown alias leaves the others.
    create_alias(hw, "alias/app-keep", k)
    assert err(lambda: delete_alias(hw, k, "alias/app-keep", "alias/app-missing"))[0] == "KMS.0207"
    assert {a.alias for a in list_aliases(hw).aliases} == {"alias/app-dup", "alias/app-keep"}


def test_key_states(hw):
    k, k2 = new_key(hw), new_key(hw)
    create_alias(hw, "alias/app-s", k2)
    r = hw.disable_key(hm.DisableKeyRequest(body=hm.OperateKeyRequestBody(key_id=k)))
    assert r.key_info.key_state == "3" and describe(hw, k).key_state == "3"
    assert err(lambda: hw.disable_key(hm.DisableKeyRequest(body=hm.OperateKeyRequestBody(key_id=k))))[0] == "KMS.1301"
    create_alias(hw, "alias/app-on-disabled", k)  # a disabled key takes aliases
    r = hw.enable_key(hm.EnableKeyRequest(body=hm.OperateKeyRequestBody(key_id=k)))
    assert r.key_info.key_state == "2"
    assert err(lambda: hw.enable_key(hm.EnableKeyRequest(body=hm.OperateKeyRequestBody(key_id=k))))[0] == "KMS.1201"
    r = hw.delete_key(hm.DeleteKeyRequest(body=hm.ScheduleKeyDeletionRequestBody(key_id=k, pending_days="7")))
    assert r.key_state == "4"
    info = describe(hw, k)
    assert info.key_state == "4" and info.scheduled_deletion_date
    assert err(lambda: create_alias(hw, "alias/app-x", k))[:2] == ("KMS.0210", 400)
    assert err(lambda: associate(hw, "alias/app-s", k))[:2] == ("KMS.0210", 400)
    assert err(lambda: hw.delete_key(hm.DeleteKeyRequest(body=hm.ScheduleKeyDeletionRequestBody(key_id=k, pending_days="7"))))[0] == "KMS.1402"
    r = hw.cancel_key_deletion(hm.CancelKeyDeletionRequest(body=hm.OperateKeyRequestBody(key_id=k)))
    assert r.key_state == "3"
    assert err(lambda: hw.cancel_key_deletion(hm.CancelKeyDeletionRequest(body=hm.OperateKeyRequestBody(key_id=k))))[0] == "KMS.1501"
    assert err(lambda: hw.delete_key(hm.DeleteKeyRequest(body=hm.ScheduleKeyDeletionRequestBody(key_id=k, pending_days="6"))))[0] == "KMS.1401"


def test_paging(hw):
    k = new_key(hw)
    names = [f"alias/app-p{i:02d}" for i in range(23)]
    for n in names:
        create_alias(hw, n, k)
    seen, marker, pages = [], None, 0
    while True:
        kw = {"limit": "5", **({"marker": marker} if marker else {})}
        page = list_aliases(hw, **kw)
        pages += 1
        assert page.page_info.current_count == len(page.aliases) <= 5
        seen += [a.alias for a in page.aliases]
        if not page.page_info.next_marker:
            break
        marker = page.page_info.next_marker
    assert pages == 5 and seen == sorted(names)


def test_projects_are_separate(emulator_url, admin):
    p1, p2 = hw_client(emulator_url), hw_client(emulator_url, project=HW_PROJECT2)
    k1, k2 = new_key(p1), new_key(p2)
    create_alias(p1, "alias/app-same", k1)
    create_alias(p2, "alias/app-same", k2)
    assert err(lambda: create_alias(p2, "alias/app-other", k1))[0] == "KMS.0207"  # another project's key
    state = admin.state(cloud="huawei")["huawei"]
    assert state[HW_PROJECT][HW_REGION]["aliases"] == {"alias/app-same": k1}
    assert state[HW_PROJECT2][HW_REGION]["aliases"] == {"alias/app-same": k2}


def test_wrong_secret_is_apigw_0301(emulator_url, admin):
    bad = hw_client(emulator_url, sk="not-the-secret")
    code, status, msg = err(lambda: new_key(bad))
    assert (code, status) == ("APIGW.0301", 401) and "signature" in msg
    unknown = hw_client(emulator_url, ak="HPUAUNKNOWNKEY000000", sk="x")
    assert err(lambda: list_aliases(unknown))[:2] == ("APIGW.0301", 401)
    assert admin.tally("huawei", "CreateKey")["auth_failures"] == 1


def test_throttling_is_apigw_0308(hw, admin):
    k = new_key(hw)
    admin.fault({"cloud": "huawei", "account": HW_PROJECT, "throttle": {"write": 1}, "throttle_burst": 1})
    create_alias(hw, "alias/app-t1", k)
    code, status, _ = err(lambda: create_alias(hw, "alias/app-t2", k))
    assert (code, status) == ("APIGW.0308", 429)
    assert admin.tally("huawei", "CreateAlias")["throttled"] == 1


def test_throttled_get_is_reported_by_the_sdk_as_plain_429(hw, admin):
    """SDK behaviour worth knowing: its urllib3 Retry has 429 in status_forcelist and 0 retries, so a
    throttled GET (list_aliases) surfaces as error_code "429" without the body's APIGW.0308; POSTs are
    not retried by urllib3 and keep the body's code. The Rust provider reads the body and sees APIGW.0308."""
    admin.fault({"cloud": "huawei", "throttle": {"read": 1}, "throttle_burst": 1})
    list_aliases(hw)
    code, status, _ = err(lambda: list_aliases(hw))
    assert (code, status) == ("429", 429)


def test_injected_server_error(hw, admin):
    admin.fault({"cloud": "huawei", "errors": [{"code": "KMS.0101", "operations": ["ListAliases"], "count": 1}]})
    with pytest.raises(ServerResponseException) as e:
        list_aliases(hw)
    assert (e.value.error_code, e.value.status_code) == ("KMS.0101", 500)
    list_aliases(hw)
