"""boto3 against the emulator's AWS KMS, and against moto wherever moto behaves like AWS: both must
parse the same successes and the same error codes. Where moto deviates (paging, the reserved
alias/aws/ prefix, key-state checks, list dates, signatures), the emulator alone is checked, against
AWS's documented behaviour (emulator/reference/kms-alias-apis.md §2, test-peers.md §1)."""

import time

import botocore.exceptions
import pytest
from botocore.retries.standard import ThrottledRetryableChecker

from conftest import reset_moto
from emu import AWS_ACCOUNT, AWS_ACCOUNT2, AWS_AK2, AWS_SK2, Admin, aws_client


@pytest.fixture(params=["moto", "emulator"])
def backend(request):
    """(name, url) with a fresh state."""
    if request.param == "moto":
        url = request.getfixturevalue("moto_url")
        reset_moto(url)
    else:
        url = request.getfixturevalue("emulator_url")
        Admin(url).reset()
    return request.param, url


@pytest.fixture
def kms(backend):
    return aws_client(backend[1])


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def user_aliases(client, **kw):
    """Every alias outside alias/aws/ (both backends list AWS-managed ones), as {name: key}."""
    out = {}
    for page in client.get_paginator("list_aliases").paginate(**kw):
        for a in page["Aliases"]:
            if not a["AliasName"].startswith("alias/aws/"):
                out[a["AliasName"]] = a.get("TargetKeyId")
    return out


# ----- both backends -----


def test_alias_lifecycle(kms):
    k1 = kms.create_key(Description="one")["KeyMetadata"]
    k2 = kms.create_key()["KeyMetadata"]
    assert k1["KeyState"] == "Enabled" and k1["Enabled"] is True
    assert k1["Arn"] == f"arn:aws:kms:us-east-1:{AWS_ACCOUNT}:key/{k1['KeyId']}"

    assert kms.create_alias(AliasName="alias/app/one", TargetKeyId=k1["KeyId"])["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert user_aliases(kms) == {"alias/app/one": k1["KeyId"]}
    assert kms.describe_key(KeyId="alias/app/one")["KeyMetadata"]["KeyId"] == k1["KeyId"]

    kms.update_alias(AliasName="alias/app/one", TargetKeyId=k2["KeyId"])
    assert kms.describe_key(KeyId="alias/app/one")["KeyMetadata"]["KeyId"] == k2["KeyId"]
    assert user_aliases(kms, KeyId=k2["KeyId"]) == {"alias/app/one": k2["KeyId"]}
    assert user_aliases(kms, KeyId=k1["KeyId"]) == {}

    listed = kms.list_aliases()["Aliases"]
    entry = next(a for a in listed if a["AliasName"] == "alias/app/one")
    assert entry["AliasArn"] == f"arn:aws:kms:us-east-1:{AWS_ACCOUNT}:alias/app/one"

    kms.delete_alias(AliasName="alias/app/one")
    assert user_aliases(kms) == {}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.describe_key(KeyId="alias/app/one")
    assert code_of(e) == "NotFoundException"


def test_target_by_key_arn(kms):
    k = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/app/arn", TargetKeyId=k["Arn"])
    assert user_aliases(kms) == {"alias/app/arn": k["KeyId"]}


def test_create_existing_alias_is_already_exists(kms):
    k1 = kms.create_key()["KeyMetadata"]["KeyId"]
    k2 = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app/dup", TargetKeyId=k1)
    for target in (k1, k2):  # same target or another: both are AlreadyExists
        with pytest.raises(botocore.exceptions.ClientError) as e:
            kms.create_alias(AliasName="alias/app/dup", TargetKeyId=target)
        assert code_of(e) == "AlreadyExistsException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "alias/app/dup already exists" in e.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    "call",
    [
        "update_missing_alias",
        "delete_missing_alias",
        "create_to_missing_key",
        "update_to_missing_key",
        "describe_missing_key",
        "list_by_missing_key",
    ],
)
def test_not_found(kms, call):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app/there", TargetKeyId=k)
    missing_key = "11111111-2222-3333-4444-555555555555"
    calls = {
        "update_missing_alias": lambda: kms.update_alias(AliasName="alias/app/missing", TargetKeyId=k),
        "delete_missing_alias": lambda: kms.delete_alias(AliasName="alias/app/missing"),
        "create_to_missing_key": lambda: kms.create_alias(AliasName="alias/app/new", TargetKeyId=missing_key),
        "update_to_missing_key": lambda: kms.update_alias(AliasName="alias/app/there", TargetKeyId=missing_key),
        "describe_missing_key": lambda: kms.describe_key(KeyId=missing_key),
        "list_by_missing_key": lambda: kms.list_aliases(KeyId=missing_key),
    }
    with pytest.raises(botocore.exceptions.ClientError) as e:
        calls[call]()
    assert code_of(e) == "NotFoundException"


@pytest.mark.parametrize("name", ["nope", "alias/bad name!", "alias/a:b"])
def test_bad_alias_name_is_validation_error(kms, name):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.create_alias(AliasName=name, TargetKeyId=k)
    assert code_of(e) == "ValidationException"


def test_target_must_be_a_key_not_an_alias(kms):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app/a", TargetKeyId=k)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.create_alias(AliasName="alias/app/b", TargetKeyId="alias/app/a")
    assert code_of(e) == "ValidationException"


def test_regions_are_separate(backend):
    use1, euw1 = aws_client(backend[1], "us-east-1"), aws_client(backend[1], "eu-west-1")
    k_use1 = use1.create_key()["KeyMetadata"]
    k_euw1 = euw1.create_key()["KeyMetadata"]
    use1.create_alias(AliasName="alias/app/r", TargetKeyId=k_use1["KeyId"])
    euw1.create_alias(AliasName="alias/app/r", TargetKeyId=k_euw1["KeyId"])
    assert user_aliases(use1) == {"alias/app/r": k_use1["KeyId"]}
    assert user_aliases(euw1) == {"alias/app/r": k_euw1["KeyId"]}
    use1.delete_alias(AliasName="alias/app/r")
    assert user_aliases(euw1) == {"alias/app/r": k_euw1["KeyId"]}
    # A key of another region is not found, by id or by ARN.
    for target in (k_use1["KeyId"], k_use1["Arn"]):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            euw1.create_alias(AliasName="alias/app/x", TargetKeyId=target)
        assert code_of(e) == "NotFoundException"


def test_key_state_operations(kms):
    k = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=k)
    assert kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.create_alias(AliasName="alias/app/disabled-ok", TargetKeyId=k)  # a Disabled key takes aliases
    kms.enable_key(KeyId=k)
    assert kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] == "Enabled"
    r = kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
    assert "DeletionDate" in r  # (AWS also returns KeyState here; moto does not)
    md = kms.describe_key(KeyId=k)["KeyMetadata"]
    assert md["KeyState"] == "PendingDeletion" and "DeletionDate" in md
    kms.cancel_key_deletion(KeyId=k)
    assert kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] == "Disabled"


# ----- emulator only: where moto deviates from AWS -----


@pytest.fixture
def ekms(emulator_url, admin):
    return aws_client(emulator_url)


def test_paging_with_limit_and_marker(ekms):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    names = {f"alias/app/p{i:02d}" for i in range(23)}
    for n in names:
        ekms.create_alias(AliasName=n, TargetKeyId=k)

    pages, seen, marker = 0, [], None
    while True:
        kw = {"Limit": 5, **({"Marker": marker} if marker else {})}
        page = ekms.list_aliases(**kw)
        pages += 1
        assert len(page["Aliases"]) <= 5
        seen += [a["AliasName"] for a in page["Aliases"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    # 23 user aliases + 2 predefined alias/aws/* entries, 5 per page.
    assert pages == 5
    assert len(seen) == len(set(seen)) == 25
    assert names <= set(seen)

    # The botocore paginator follows NextMarker too; filtered by key, only ours.
    got = [a["AliasName"] for p in ekms.get_paginator("list_aliases").paginate(KeyId=k, PaginationConfig={"PageSize": 4}) for a in p["Aliases"]]
    assert sorted(got) == sorted(names)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        ekms.list_aliases(Limit=5, Marker="!!not-a-marker!!")
    assert code_of(e) == "InvalidMarkerException"


def test_page_is_capped_at_100(ekms, admin):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    for i in range(120):
        admin.alias("aws", f"alias/app/bulk{i:03d}", k, account=AWS_ACCOUNT, region="us-east-1")
    page = ekms.list_aliases(Limit=1000)
    assert len(page["Aliases"]) == 100 and page["Truncated"] is True


def test_list_entries_carry_dates_and_predefined_aliases_have_no_target(ekms):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    ekms.create_alias(AliasName="alias/app/dated", TargetKeyId=k)
    entries = {a["AliasName"]: a for a in ekms.list_aliases()["Aliases"]}
    assert "CreationDate" in entries["alias/app/dated"] and "LastUpdatedDate" in entries["alias/app/dated"]
    assert "TargetKeyId" not in entries["alias/aws/ebs"]


@pytest.mark.parametrize("op", ["create", "update", "delete"])
def test_reserved_aws_prefix_is_refused(ekms, op):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        if op == "create":
            ekms.create_alias(AliasName="alias/aws/mine", TargetKeyId=k)
        elif op == "update":
            ekms.update_alias(AliasName="alias/aws/ebs", TargetKeyId=k)
        else:
            ekms.delete_alias(AliasName="alias/aws/ebs")
    assert code_of(e) == "NotAuthorizedException"


def test_name_length_limits(ekms):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    longest = "alias/" + "x" * 250  # 256 characters: allowed
    ekms.create_alias(AliasName=longest, TargetKeyId=k)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ekms.create_alias(AliasName="alias/", TargetKeyId=k)
    assert code_of(e) == "ValidationException"


def test_pending_deletion_target_is_invalid_state(ekms):
    k1 = ekms.create_key()["KeyMetadata"]["KeyId"]
    k2 = ekms.create_key()["KeyMetadata"]["KeyId"]
    ekms.create_alias(AliasName="alias/app/s", TargetKeyId=k1)
    ekms.schedule_key_deletion(KeyId=k2, PendingWindowInDays=7)
    for call in (
        lambda: ekms.create_alias(AliasName="alias/app/new", TargetKeyId=k2),
        lambda: ekms.update_alias(AliasName="alias/app/s", TargetKeyId=k2),
        lambda: ekms.enable_key(KeyId=k2),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == "KMSInvalidStateException"
    # Deleting an alias of a PendingDeletion key is allowed.
    ekms.schedule_key_deletion(KeyId=k1, PendingWindowInDays=7)
    ekms.delete_alias(AliasName="alias/app/s")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ekms.schedule_key_deletion(KeyId=k1, PendingWindowInDays=3)
    assert code_of(e) == "ValidationException"


def test_accounts_are_separate(emulator_url, admin):
    a1, a2 = aws_client(emulator_url), aws_client(emulator_url, ak=AWS_AK2, sk=AWS_SK2)
    k1 = a1.create_key()["KeyMetadata"]
    k2 = a2.create_key()["KeyMetadata"]
    assert k2["Arn"].startswith(f"arn:aws:kms:us-east-1:{AWS_ACCOUNT2}:key/")
    a1.create_alias(AliasName="alias/app/acct", TargetKeyId=k1["KeyId"])
    a2.create_alias(AliasName="alias/app/acct", TargetKeyId=k2["KeyId"])
    state = admin.state(cloud="aws")["aws"]
    assert state[AWS_ACCOUNT]["us-east-1"]["aliases"]["alias/app/acct"] == k1["KeyId"]
    assert state[AWS_ACCOUNT2]["us-east-1"]["aliases"]["alias/app/acct"] == k2["KeyId"]


def test_admin_created_keys_are_usable(ekms, admin):
    k = admin.key("aws", account=AWS_ACCOUNT, region="us-east-1")
    ekms.create_alias(AliasName="alias/app/adm", TargetKeyId=k)
    admin.key("aws", account=AWS_ACCOUNT, region="us-east-1", key_id=k, state="PendingDeletion")
    assert ekms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] == "PendingDeletion"


# ----- authentication -----


def test_wrong_secret_is_invalid_signature(emulator_url, admin):
    bad = aws_client(emulator_url, sk="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_aliases()
    assert code_of(e) == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert admin.tally("aws", "ListAliases")["auth_failures"] == 1


def test_unknown_access_key_is_unrecognized_client(emulator_url, admin):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aws_client(emulator_url, ak="AKIAUNKNOWNUNKNOWN00").list_aliases()
    assert code_of(e) == "UnrecognizedClientException"


# ----- fault injection -----


def test_throttling_is_parsed_as_throttling(ekms, admin):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    admin.fault({"cloud": "aws", "throttle": {"write": 1}, "throttle_burst": 1})
    ekms.create_alias(AliasName="alias/app/t1", TargetKeyId=k)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ekms.create_alias(AliasName="alias/app/t2", TargetKeyId=k)
    assert code_of(e) == "ThrottlingException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert code_of(e) in ThrottledRetryableChecker._THROTTLED_ERROR_CODES  # botocore's own throttle list
    ekms.list_aliases()  # reads have their own class: not throttled
    t = admin.tally("aws", "CreateAlias")
    assert (t["calls"], t["ok"], t["throttled"]) == (2, 1, 1)
    time.sleep(1.1)  # the bucket refills at 1/s
    ekms.create_alias(AliasName="alias/app/t2", TargetKeyId=k)


def test_injected_internal_error_then_recovery(ekms, admin):
    k = ekms.create_key()["KeyMetadata"]["KeyId"]
    admin.fault({"cloud": "aws", "region": "us-east-1", "errors": [{"code": "KMSInternalException", "operations": ["CreateAlias"], "count": 1}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ekms.create_alias(AliasName="alias/app/i", TargetKeyId=k)
    assert code_of(e) == "KMSInternalException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    ekms.create_alias(AliasName="alias/app/i", TargetKeyId=k)  # count spent
    assert admin.tally("aws", "CreateAlias")["injected"] == 1


def test_fault_scoped_to_another_region_does_not_apply(emulator_url, admin):
    admin.fault({"cloud": "aws", "region": "eu-west-1", "outage": "503"})
    aws_client(emulator_url, "us-east-1").list_aliases()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aws_client(emulator_url, "eu-west-1").list_aliases()
    assert code_of(e) == "ServiceUnavailableException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_outage_drop_closes_the_connection(ekms, admin):
    admin.fault({"cloud": "aws", "outage": "drop"})
    with pytest.raises(botocore.exceptions.BotoCoreError) as e:  # no HTTP response at all
        ekms.list_aliases()
    assert isinstance(e.value, botocore.exceptions.HTTPClientError), repr(e.value)
    admin.clear_faults()
    ekms.list_aliases()
    assert admin.tally("aws", "ListAliases")["outages"] == 1


def test_latency(ekms, admin):
    admin.fault({"cloud": "aws", "latency_ms": 300})
    t0 = time.monotonic()
    ekms.list_aliases()
    assert time.monotonic() - t0 >= 0.3
