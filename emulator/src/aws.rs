//! AWS KMS, API 2014-11-01: JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`), SigV4 with
//! service `kms`. The account comes from the access key, the region from the credential scope.
//! Errors are HTTP 400 with `{"__type": Code, "message": …}` and `X-Amzn-ErrorType: Code` (what
//! boto3 and moto use; the Smithy model's 404/409 statuses are not what KMS sends), 500/503 for
//! server faults. Where real AWS and moto differ, this follows AWS (see tests/sdk).

use std::ops::Bound;

use axum::response::Response;
use base64::Engine;
use chrono::Duration as ChronoDuration;
use serde_json::{json, Value};

use crate::app::App;
use crate::names::{self, NameError};
use crate::state::{Key, KeyState, Scope, ScopeKey};
use crate::verify::{self, AuthFailure};
use crate::wire::{epoch_seconds, respond, uuid4, ApiError, CallInfo, Cloud, OpClass, RawRequest};

const TARGET_PREFIX: &str = "TrentService.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Region for a request without a credential scope (it fails authentication anyway).
const DEFAULT_REGION: &str = "us-east-1";
/// Resource quota: aliases per key (LimitExceededException beyond).
const MAX_ALIASES_PER_KEY: usize = 50;
/// ListAliases: default Limit 50; the model allows 1–1000, the docs promise at most 100 per page.
const LIST_DEFAULT: i64 = 50;
const LIST_MAX_LIMIT: i64 = 1000;
const LIST_PAGE_CAP: usize = 100;

pub fn matches(req: &RawRequest) -> bool {
    req.header("x-amz-target").is_some_and(|t| t.starts_with(TARGET_PREFIX))
}

pub fn call_info(app: &App, req: &RawRequest) -> CallInfo {
    let operation = req.header("x-amz-target").and_then(|t| t.strip_prefix(TARGET_PREFIX)).unwrap_or("").to_string();
    let auth = req.header("authorization").and_then(verify::parse_aws_authorization);
    let region =
        auth.as_ref().map(|a| a.region.clone()).filter(|r| !r.is_empty()).unwrap_or_else(|| DEFAULT_REGION.into());
    let account = match &auth {
        Some(a) => app.credentials.account_for(Cloud::Aws, &a.access_key_id),
        None => "anonymous".into(),
    };
    let class = match operation.as_str() {
        "CreateKey" => OpClass::CreateKey,
        "DescribeKey" | "ListAliases" => OpClass::Read,
        _ => OpClass::Write,
    };
    CallInfo { cloud: Cloud::Aws, operation, class, account, region }
}

pub fn auth_error(f: AuthFailure) -> ApiError {
    match f {
        AuthFailure::Missing(m) => ApiError::new(400, "MissingAuthenticationTokenException", m),
        AuthFailure::Incomplete(m) => ApiError::new(400, "IncompleteSignatureException", m),
        AuthFailure::UnknownKey(_) => {
            ApiError::new(400, "UnrecognizedClientException", "The security token included in the request is invalid.")
        }
        AuthFailure::Mismatch => ApiError::new(
            400,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret \
             Access Key and signing method. Consult the service documentation for details.",
        ),
        AuthFailure::Expired(m) => ApiError::new(400, "InvalidSignatureException", m),
    }
}

pub fn throttled() -> ApiError {
    ApiError::new(400, "ThrottlingException", "Rate exceeded")
}

pub fn unavailable() -> ApiError {
    ApiError::new(503, "ServiceUnavailableException", "Service Unavailable")
}

pub fn render_error(err: &ApiError) -> Response {
    let body = json!({ "__type": err.code, "message": err.message });
    respond(
        err.status,
        "application/x-amz-json-1.1",
        body.to_string().into_bytes(),
        &[("x-amzn-errortype", err.code.clone()), ("x-amzn-requestid", uuid4())],
    )
}

fn ok_json(v: Value) -> Response {
    respond(200, CONTENT_TYPE, v.to_string().into_bytes(), &[("x-amzn-requestid", uuid4())])
}

/// The alias mutators and Enable/DisableKey answer 200 with an empty body.
fn ok_empty() -> Response {
    respond(200, CONTENT_TYPE, Vec::new(), &[("x-amzn-requestid", uuid4())])
}

pub fn execute(app: &App, req: &RawRequest, info: &CallInfo) -> Result<Response, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|e| ApiError::new(400, "SerializationException", e.to_string()))?
    };
    if !body.is_object() {
        return Err(ApiError::new(
            400,
            "SerializationException",
            "Start of structure or map found where not expected.",
        ));
    }
    let scope = ScopeKey { cloud: Cloud::Aws, account: info.account.clone(), region: info.region.clone() };
    let b = &body;
    match info.operation.as_str() {
        "CreateKey" => create_key(app, &scope, b),
        "DescribeKey" => describe_key(app, &scope, b),
        "ListAliases" => list_aliases(app, &scope, b),
        "CreateAlias" => set_alias(app, &scope, b, false),
        "UpdateAlias" => set_alias(app, &scope, b, true),
        "DeleteAlias" => delete_alias(app, &scope, b),
        "EnableKey" => set_enabled(app, &scope, b, true),
        "DisableKey" => set_enabled(app, &scope, b, false),
        "ScheduleKeyDeletion" => schedule_deletion(app, &scope, b),
        "CancelKeyDeletion" => cancel_deletion(app, &scope, b),
        other => Err(ApiError::new(400, "UnknownOperationException", format!("{other} is not emulated"))),
    }
}

// ----- request fields -----

fn member(field: &str) -> String {
    let mut c = field.chars();
    c.next().map(|f| f.to_ascii_lowercase().to_string() + c.as_str()).unwrap_or_default()
}

fn validation(msg: impl Into<String>) -> ApiError {
    ApiError::new(400, "ValidationException", msg)
}

fn opt_str<'a>(body: &'a Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(400, "SerializationException", format!("{field}: expected a string"))),
    }
}

fn req_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    opt_str(body, field)?.ok_or_else(|| {
        validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
            member(field)
        ))
    })
}

fn opt_int(body: &Value, field: &str) -> Result<Option<i64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::new(400, "SerializationException", format!("{field}: expected an integer"))),
    }
}

fn opt_bool(body: &Value, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::new(400, "SerializationException", format!("{field}: expected a boolean"))),
    }
}

fn range_check(field: &str, v: i64, lo: i64, hi: i64) -> Result<(), ApiError> {
    let m = member(field);
    if v < lo {
        return Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{m}' failed to satisfy constraint: Member must have value greater than or equal to {lo}"
        )));
    }
    if v > hi {
        return Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{m}' failed to satisfy constraint: Member must have value less than or equal to {hi}"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ApiError> {
    names::check(&names::AWS, name).map_err(|e| match e {
        NameError::MissingPrefix => validation("Invalid identifier"),
        NameError::Empty => validation(format!("Alias name '{name}' must have a name after 'alias/'")),
        NameError::TooLong => validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must have length less than or equal to 256"
        )),
        // Creating, re-pointing or deleting an AWS managed alias is not allowed.
        NameError::Reserved => ApiError::new(400, "NotAuthorizedException", "The alias/aws/ prefix is reserved for AWS managed keys."),
        NameError::Colon => validation(format!("{name} contains invalid characters for an alias")),
        NameError::BadCharacter => validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )),
    })
}

// ----- identifiers -----

fn key_arn(scope: &ScopeKey, id: &str) -> String {
    format!("arn:aws:kms:{}:{}:key/{id}", scope.region, scope.account)
}

fn alias_arn(scope: &ScopeKey, name: &str) -> String {
    format!("arn:aws:kms:{}:{}:{name}", scope.region, scope.account)
}

fn key_not_found(scope: &ScopeKey, given: &str) -> ApiError {
    let arn = if given.starts_with("arn:") { given.to_string() } else { key_arn(scope, given) };
    ApiError::new(400, "NotFoundException", format!("Key '{arn}' does not exist"))
}

fn alias_not_found(scope: &ScopeKey, name: &str) -> ApiError {
    let arn = if name.starts_with("arn:") { name.to_string() } else { alias_arn(scope, name) };
    ApiError::new(400, "NotFoundException", format!("Alias {arn} is not found."))
}

fn invalid_state(scope: &ScopeKey, key: &Key) -> ApiError {
    let what = match key.state {
        KeyState::PendingDeletion => "is pending deletion",
        KeyState::Disabled => "is disabled",
        KeyState::Enabled => "is enabled",
    };
    ApiError::new(400, "KMSInvalidStateException", format!("{} {what}.", key_arn(scope, &key.id)))
}

fn is_alias_ref(s: &str) -> bool {
    s.starts_with("alias/") || (s.starts_with("arn:") && s.contains(":alias/"))
}

/// The key id named by `given`: a key id, a key ARN or (with `allow_alias`) an alias name or alias
/// ARN. An ARN of another account or region names nothing here.
fn find_key(s: &Scope, scope: &ScopeKey, given: &str, allow_alias: bool) -> Result<String, ApiError> {
    let local = match given.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() != 5 || parts[1] != "kms" || !parts[0].starts_with("aws") {
                return Err(ApiError::new(400, "InvalidArnException", format!("Invalid arn {given}")));
            }
            if parts[2] != scope.region || parts[3] != scope.account {
                return Err(if is_alias_ref(given) {
                    alias_not_found(scope, given)
                } else {
                    key_not_found(scope, given)
                });
            }
            parts[4]
        }
        None => given,
    };
    if let Some(id) = local.strip_prefix("key/") {
        return s.keys.contains_key(id).then(|| id.to_string()).ok_or_else(|| key_not_found(scope, given));
    }
    if local.starts_with("alias/") {
        if !allow_alias {
            return Err(validation("Aliases must refer to keys. Not aliases"));
        }
        return match s.aliases.get(local).and_then(|a| a.key_id.clone()) {
            Some(id) if s.keys.contains_key(&id) => Ok(id),
            _ => Err(alias_not_found(scope, local)),
        };
    }
    s.keys.contains_key(local).then(|| local.to_string()).ok_or_else(|| key_not_found(scope, given))
}

fn key_metadata(scope: &ScopeKey, k: &Key) -> Value {
    let arn = key_arn(scope, &k.id);
    let mut m = json!({
        "AWSAccountId": scope.account,
        "KeyId": k.id,
        "Arn": arn,
        "CreationDate": epoch_seconds(k.created),
        "Enabled": k.state == KeyState::Enabled,
        "Description": k.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": k.state.as_str(),
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": k.multi_region,
    });
    if let Some(d) = k.deletion_date {
        m["DeletionDate"] = json!(epoch_seconds(d));
    }
    if let Some(p) = k.pending_days {
        m["PendingDeletionWindowInDays"] = json!(p);
    }
    if k.multi_region {
        m["MultiRegionConfiguration"] = json!({
            "MultiRegionKeyType": "PRIMARY",
            "PrimaryKey": { "Arn": arn, "Region": scope.region },
            "ReplicaKeys": [],
        });
    }
    m
}

// ----- operations -----

fn create_key(app: &App, scope: &ScopeKey, b: &Value) -> Result<Response, ApiError> {
    let description = opt_str(b, "Description")?.unwrap_or("").to_string();
    let multi = opt_bool(b, "MultiRegion")?.unwrap_or(false);
    let id = if multi { format!("mrk-{}", uuid4().replace('-', "")) } else { uuid4() };
    let key = app.store.with(scope, |s| {
        let mut k = Key::new(id.clone(), scope.account.clone());
        k.description = description;
        k.multi_region = multi;
        s.keys.insert(id, k.clone());
        k
    });
    Ok(ok_json(json!({ "KeyMetadata": key_metadata(scope, &key) })))
}

fn describe_key(app: &App, scope: &ScopeKey, b: &Value) -> Result<Response, ApiError> {
    let given = req_str(b, "KeyId")?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, true)?;
        Ok(ok_json(json!({ "KeyMetadata": key_metadata(scope, &s.keys[&id]) })))
    })
}

/// Real paging, unlike moto: at most min(Limit, 100) entries, `Truncated` and an opaque
/// `NextMarker` (the last name returned, base64url) while more remain.
fn list_aliases(app: &App, scope: &ScopeKey, b: &Value) -> Result<Response, ApiError> {
    let key_filter = opt_str(b, "KeyId")?;
    let limit = opt_int(b, "Limit")?.unwrap_or(LIST_DEFAULT);
    range_check("Limit", limit, 1, LIST_MAX_LIMIT)?;
    let page = (limit as usize).min(LIST_PAGE_CAP);
    let after = match opt_str(b, "Marker")? {
        None => None,
        Some(m) => {
            let decoded =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(m).ok().and_then(|v| String::from_utf8(v).ok());
            Some(decoded.ok_or_else(|| {
                ApiError::new(400, "InvalidMarkerException", "The request was rejected because the marker that specifies where pagination should next begin is not valid.")
            })?)
        }
    };
    app.store.with(scope, |s| {
        let key_id = match key_filter {
            Some(k) => Some(find_key(s, scope, k, false)?),
            None => None,
        };
        let lower = match &after {
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Unbounded,
        };
        let mut entries: Vec<Value> = Vec::new();
        let mut last = None;
        let mut truncated = false;
        for (name, a) in s.aliases.range::<String, _>((lower, Bound::Unbounded)) {
            if key_id.as_ref().is_some_and(|k| a.key_id.as_ref() != Some(k)) {
                continue;
            }
            if entries.len() == page {
                truncated = true;
                break;
            }
            let mut e = json!({
                "AliasName": name,
                "AliasArn": alias_arn(scope, name),
                "CreationDate": epoch_seconds(a.created),
                "LastUpdatedDate": epoch_seconds(a.updated),
            });
            if let Some(k) = &a.key_id {
                e["TargetKeyId"] = json!(k);
            }
            entries.push(e);
            last = Some(name.clone());
        }
        let mut out = json!({ "Aliases": entries, "Truncated": truncated });
        if truncated {
            let marker = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.unwrap_or_default());
            out["NextMarker"] = json!(marker);
        }
        Ok(ok_json(out))
    })
}

/// CreateAlias / UpdateAlias. Checks in moto's order (name, target shape, key, alias), with AWS's
/// key-state rule added: a PendingDeletion target is refused (moto accepts it).
fn set_alias(app: &App, scope: &ScopeKey, b: &Value, update: bool) -> Result<Response, ApiError> {
    let name = req_str(b, "AliasName")?;
    let target = req_str(b, "TargetKeyId")?;
    check_name(name)?;
    if is_alias_ref(target) {
        return Err(validation("Aliases must refer to keys. Not aliases"));
    }
    app.store.with(scope, |s| {
        let key_id = find_key(s, scope, target, false)?;
        let key = &s.keys[&key_id];
        if key.state == KeyState::PendingDeletion {
            return Err(invalid_state(scope, key));
        }
        match (update, s.aliases.get(name)) {
            (true, None) => return Err(alias_not_found(scope, name)),
            (true, Some(a)) if a.key_id.as_deref() == Some(key_id.as_str()) => return Ok(ok_empty()),
            (false, Some(_)) => {
                return Err(ApiError::new(
                    400,
                    "AlreadyExistsException",
                    format!("An alias with the name {} already exists", alias_arn(scope, name)),
                ))
            }
            _ => {}
        }
        if s.alias_count(&key_id) >= MAX_ALIASES_PER_KEY {
            return Err(ApiError::new(
                400,
                "LimitExceededException",
                format!("Key '{}' already has {MAX_ALIASES_PER_KEY} aliases", key_arn(scope, &key_id)),
            ));
        }
        s.put_alias(name, Some(key_id), &scope.account);
        Ok(ok_empty())
    })
}

fn delete_alias(app: &App, scope: &ScopeKey, b: &Value) -> Result<Response, ApiError> {
    let name = req_str(b, "AliasName")?;
    check_name(name)?;
    app.store.with(scope, |s| match s.remove_alias(name) {
        Some(_) => Ok(ok_empty()),
        None => Err(alias_not_found(scope, name)),
    })
}

fn set_enabled(app: &App, scope: &ScopeKey, b: &Value, enable: bool) -> Result<Response, ApiError> {
    let given = req_str(b, "KeyId")?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        let key = s.keys.get_mut(&id).expect("found above");
        if key.state == KeyState::PendingDeletion {
            return Err(invalid_state(scope, key));
        }
        key.state = if enable { KeyState::Enabled } else { KeyState::Disabled };
        Ok(ok_empty())
    })
}

fn schedule_deletion(app: &App, scope: &ScopeKey, b: &Value) -> Result<Response, ApiError> {
    let given = req_str(b, "KeyId")?;
    let days = opt_int(b, "PendingWindowInDays")?.unwrap_or(30);
    range_check("PendingWindowInDays", days, 7, 30)?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        let key = s.keys.get_mut(&id).expect("found above");
        if key.state == KeyState::PendingDeletion {
            return Err(invalid_state(scope, key));
        }
        let when = chrono::Utc::now() + ChronoDuration::days(days);
        key.state = KeyState::PendingDeletion;
        key.deletion_date = Some(when);
        key.pending_days = Some(days as u32);
        Ok(ok_json(json!({
            "KeyId": key_arn(scope, &id),
            "DeletionDate": epoch_seconds(when),
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        })))
    })
}

/// AWS leaves a key whose deletion was cancelled Disabled.
fn cancel_deletion(app: &App, scope: &ScopeKey, b: &Value) -> Result<Response, ApiError> {
    let given = req_str(b, "KeyId")?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        let key = s.keys.get_mut(&id).expect("found above");
        if key.state != KeyState::PendingDeletion {
            return Err(invalid_state(scope, key));
        }
        key.state = KeyState::Disabled;
        key.deletion_date = None;
        key.pending_days = None;
        Ok(ok_json(json!({ "KeyId": key_arn(scope, &id) })))
    })
}
