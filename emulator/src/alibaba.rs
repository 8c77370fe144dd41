//! Alibaba Cloud KMS, API 2016-01-20, RPC style: `Action` + parameters in the query (or a form
//! body), signed with ACS3-HMAC-SHA256 (the new Tea SDK's default) or RPC v1 HMAC-SHA1 (its `v2`
//! mode and the legacy core SDK). The account comes from the access key; the region from the Host
//! (`kms[-vpc].<region>.aliyuncs.com`), else `RegionId`, else the listener's or the default region.
//! Every answer is JSON with `RequestId`; errors add `Code`, `Message`, `HostId`, `Recommend`.

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::app::App;
use crate::names::{self, NameError};
use crate::state::{Key, KeyState, Scope, ScopeKey};
use crate::verify::AuthFailure;
use crate::wire::{decode_query, random_alnum, respond, uuid4, ApiError, CallInfo, Cloud, OpClass, RawRequest};

const VERSION: &str = "2016-01-20";
const CONTENT_TYPE: &str = "application/json;charset=utf-8";
const PAGE_SIZE_DEFAULT: u64 = 10;
const PAGE_SIZE_MAX: u64 = 100;

/// Query parameters plus, for a form POST, the body's; decoded.
pub fn params_of(req: &RawRequest) -> Vec<(String, String)> {
    let mut params = decode_query(&req.raw_query);
    let form = req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(decode_query(&String::from_utf8_lossy(&req.body)));
    }
    params
}

pub fn matches(req: &RawRequest) -> bool {
    req.header("x-acs-action").is_some() || params_of(req).iter().any(|(k, _)| k == "Action")
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// A missing mandatory parameter is `Missing<Name>`, the POP gateway's convention.
    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| {
            ApiError::new(400, format!("Missing{name}"), format!("{name} is mandatory for this action."))
        })
    }

    fn number(&self, name: &str, default: u64, lo: u64, hi: u64) -> Result<u64, ApiError> {
        let Some(v) = self.get(name) else { return Ok(default) };
        v.parse::<u64>().ok().filter(|n| (lo..=hi).contains(n)).ok_or_else(|| invalid_parameter(name))
    }
}

fn invalid_parameter(name: &str) -> ApiError {
    ApiError::new(400, "InvalidParameter", format!("The specified parameter {name} is not valid."))
}

fn region_from_host(host: &str) -> Option<String> {
    let rest = host.strip_suffix(".aliyuncs.com")?;
    let region = rest.strip_prefix("kms.").or_else(|| rest.strip_prefix("kms-vpc."))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

pub fn call_info(app: &App, req: &RawRequest) -> CallInfo {
    let params = params_of(req);
    let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let operation = req.header("x-acs-action").map(str::to_string).or_else(|| param("Action")).unwrap_or_default();
    let ak = req
        .header("authorization")
        .and_then(crate::verify::parse_acs3)
        .map(|a| a.access_key_id)
        .or_else(|| param("AccessKeyId"));
    let account = match &ak {
        Some(ak) => app.credentials.account_for(Cloud::Alibaba, ak),
        None => "anonymous".into(),
    };
    let region = region_from_host(req.hostname())
        .or_else(|| param("RegionId"))
        .or_else(|| req.listener_region.clone())
        .unwrap_or_else(|| app.options.alibaba_region.clone());
    let class = match operation.as_str() {
        "CreateKey" => OpClass::CreateKey,
        "DescribeKey" | "ListAliases" | "ListAliasesByKeyId" => OpClass::Read,
        _ => OpClass::Write,
    };
    CallInfo { cloud: Cloud::Alibaba, operation, class, account, region }
}

pub fn auth_error(f: AuthFailure) -> ApiError {
    match f {
        AuthFailure::Missing(m) | AuthFailure::Incomplete(m) => ApiError::new(400, "IncompleteSignature", m),
        AuthFailure::UnknownKey(_) => {
            ApiError::new(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        }
        AuthFailure::Mismatch => {
            ApiError::new(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        }
        AuthFailure::Expired(_) => {
            ApiError::new(400, "IllegalTimestamp", "Specified time stamp or date value is expired.")
        }
    }
}

pub fn throttled() -> ApiError {
    ApiError::new(429, "Rejected.Throttling", "QPS Limit Exceeded")
}

pub fn unavailable() -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailableTemporary",
        "The request has failed due to a temporary failure of the server.",
    )
}

fn request_id() -> String {
    uuid4().to_ascii_uppercase()
}

pub fn render_error(err: &ApiError, info: &CallInfo) -> Response {
    let body = json!({
        "RequestId": request_id(),
        "HostId": format!("kms.{}.aliyuncs.com", info.region),
        "Code": err.code,
        "Message": err.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=Kms", err.code),
    });
    respond(err.status, CONTENT_TYPE, body.to_string().into_bytes(), &[])
}

fn ok(mut v: Value) -> Response {
    v["RequestId"] = json!(request_id());
    respond(200, CONTENT_TYPE, v.to_string().into_bytes(), &[])
}

pub fn execute(app: &App, req: &RawRequest, info: &CallInfo) -> Result<Response, ApiError> {
    let p = Params(params_of(req));
    let version = req.header("x-acs-version").or(p.get("Version"));
    if version != Some(VERSION) {
        return Err(ApiError::new(400, "InvalidVersion", "Specified parameter Version is not valid."));
    }
    let scope = ScopeKey { cloud: Cloud::Alibaba, account: info.account.clone(), region: info.region.clone() };
    match info.operation.as_str() {
        "CreateKey" => create_key(app, &scope, &p),
        "DescribeKey" => describe_key(app, &scope, &p),
        "CreateAlias" => create_alias(app, &scope, &p),
        "UpdateAlias" => update_alias(app, &scope, &p),
        "DeleteAlias" => delete_alias(app, &scope, &p),
        "ListAliases" => list_aliases(app, &scope, &p, false),
        "ListAliasesByKeyId" => list_aliases(app, &scope, &p, true),
        "EnableKey" => set_enabled(app, &scope, &p, true),
        "DisableKey" => set_enabled(app, &scope, &p, false),
        "ScheduleKeyDeletion" => schedule_deletion(app, &scope, &p),
        "CancelKeyDeletion" => cancel_deletion(app, &scope, &p),
        other => Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api is not found, please check your url and method. ({other})"),
        )),
    }
}

// ----- helpers -----

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn key_arn(scope: &ScopeKey, id: &str) -> String {
    format!("acs:kms:{}:{}:key/{id}", scope.region, scope.account)
}

fn alias_arn(scope: &ScopeKey, name: &str) -> String {
    format!("acs:kms:{}:{}:{name}", scope.region, scope.account)
}

fn key_not_found() -> ApiError {
    ApiError::new(404, "Forbidden.KeyNotFound", "The specified Key is not found.")
}

fn alias_not_found() -> ApiError {
    ApiError::new(404, "Forbidden.AliasNotFound", "The specified Alias is not found.")
}

/// State refusals are `Rejected.<current state>` (HTTP 409).
fn rejected(key: &Key) -> ApiError {
    ApiError::new(409, format!("Rejected.{}", key.state.as_str()), format!("The key is {}.", key.state.as_str()))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    names::check(&names::ALIBABA, name).map_err(|e| match e {
        NameError::Reserved => ApiError::new(
            400,
            "InvalidParameter",
            "The specified parameter AliasName is not valid: the alias/acs/ prefix is reserved.",
        ),
        _ => invalid_parameter("AliasName"),
    })
}

/// A key named by id, key ARN or (with `allow_alias`) alias name / alias ARN, in this account+region.
fn find_key(s: &Scope, scope: &ScopeKey, given: &str, allow_alias: bool) -> Result<String, ApiError> {
    let local = match given.strip_prefix("acs:kms:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(3, ':').collect();
            if parts.len() != 3 || parts[0] != scope.region || parts[1] != scope.account {
                return Err(key_not_found());
            }
            parts[2]
        }
        None => given,
    };
    if let Some(id) = local.strip_prefix("key/") {
        return s.keys.contains_key(id).then(|| id.to_string()).ok_or_else(key_not_found);
    }
    if local.starts_with(names::PREFIX) {
        if !allow_alias {
            return Err(key_not_found());
        }
        return match s.aliases.get(local).and_then(|a| a.key_id.clone()) {
            Some(id) if s.keys.contains_key(&id) => Ok(id),
            _ => Err(alias_not_found()),
        };
    }
    s.keys.contains_key(local).then(|| local.to_string()).ok_or_else(key_not_found)
}

fn key_metadata(scope: &ScopeKey, k: &Key) -> Value {
    json!({
        "KeyId": k.id,
        "Arn": key_arn(scope, &k.id),
        "CreationDate": iso(k.created),
        "Creator": scope.account,
        "Description": k.description,
        "KeyState": k.state.as_str(),
        "KeyUsage": "ENCRYPT/DECRYPT",
        "KeySpec": "Aliyun_AES_256",
        "Origin": "Aliyun_KMS",
        "ProtectionLevel": "SOFTWARE",
        "DeleteDate": k.deletion_date.map(iso).unwrap_or_default(),
        "MaterialExpireTime": "",
        "AutomaticRotation": "Disabled",
        "DeletionProtection": "Disabled",
        "PrimaryKeyVersion": k.id.clone() + "-v1",
        "LastRotationDate": iso(k.created),
        "NextRotationDate": "",
    })
}

// ----- operations -----

fn create_key(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let id = format!("key-{}", random_alnum(21));
    let description = p.get("Description").unwrap_or("").to_string();
    let key = app.store.with(scope, |s| {
        let mut k = Key::new(id.clone(), scope.account.clone());
        k.description = description;
        s.keys.insert(id, k.clone());
        k
    });
    Ok(ok(json!({ "KeyMetadata": key_metadata(scope, &key) })))
}

fn describe_key(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let given = p.required("KeyId")?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, true)?;
        Ok(ok(json!({ "KeyMetadata": key_metadata(scope, &s.keys[&id]) })))
    })
}

/// The docs list only PendingDeletion as refusing CreateAlias, with `Rejected.StateModifiedFailed`
/// (kms-alias-apis.md §3.3); a Disabled key takes aliases.
fn create_alias(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let name = p.required("AliasName")?;
    let given = p.required("KeyId")?;
    check_name(name)?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        if s.keys[&id].state == KeyState::PendingDeletion {
            return Err(ApiError::new(409, "Rejected.StateModifiedFailed", "The key is pending deletion."));
        }
        if s.aliases.contains_key(name) {
            return Err(ApiError::new(400, "AliasAlreadyExists", "The specified alias already exists."));
        }
        s.put_alias(name, Some(id), &scope.account);
        Ok(ok(json!({})))
    })
}

/// Depends only on the new target's state; its code for PendingDeletion is cut off in the docs,
/// `Rejected.PendingDeletion` is the emulator's choice.
fn update_alias(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let name = p.required("AliasName")?;
    let given = p.required("KeyId")?;
    check_name(name)?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        if s.keys[&id].state == KeyState::PendingDeletion {
            return Err(rejected(&s.keys[&id]));
        }
        if !s.aliases.contains_key(name) {
            return Err(alias_not_found());
        }
        s.put_alias(name, Some(id), &scope.account);
        Ok(ok(json!({})))
    })
}

fn delete_alias(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let name = p.required("AliasName")?;
    app.store.with(scope, |s| match s.remove_alias(name) {
        Some(_) => Ok(ok(json!({}))),
        None => Err(alias_not_found()),
    })
}

/// `PageNumber` from 1, `PageSize` 1–100 (default 10); `TotalCount` is the whole listing, so
/// clients page until PageNumber*PageSize >= TotalCount.
fn list_aliases(app: &App, scope: &ScopeKey, p: &Params, by_key: bool) -> Result<Response, ApiError> {
    let page_number = p.number("PageNumber", 1, 1, u64::from(u32::MAX))?;
    let page_size = p.number("PageSize", PAGE_SIZE_DEFAULT, 1, PAGE_SIZE_MAX)?;
    let key_ref = if by_key { Some(p.required("KeyId")?) } else { None };
    app.store.with(scope, |s| {
        let key_id = match key_ref {
            Some(k) => Some(find_key(s, scope, k, false)?),
            None => None,
        };
        let all: Vec<(&String, &String)> = s
            .aliases
            .iter()
            .filter_map(|(n, a)| Some((n, a.key_id.as_ref()?)))
            .filter(|(_, k)| key_id.as_ref().is_none_or(|want| want == *k))
            .collect();
        let start = ((page_number - 1) * page_size) as usize;
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(page_size as usize)
            .map(|(n, k)| json!({ "KeyId": k, "AliasName": n, "AliasArn": alias_arn(scope, n) }))
            .collect();
        Ok(ok(json!({
            "Aliases": { "Alias": page },
            "TotalCount": all.len(),
            "PageNumber": page_number,
            "PageSize": page_size,
        })))
    })
}

fn set_enabled(app: &App, scope: &ScopeKey, p: &Params, enable: bool) -> Result<Response, ApiError> {
    let given = p.required("KeyId")?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        let key = s.keys.get_mut(&id).expect("found above");
        if key.state == KeyState::PendingDeletion {
            return Err(rejected(key));
        }
        key.state = if enable { KeyState::Enabled } else { KeyState::Disabled };
        Ok(ok(json!({})))
    })
}

fn schedule_deletion(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let given = p.required("KeyId")?;
    p.required("PendingWindowInDays")?;
    let days = p.number("PendingWindowInDays", 0, 7, 366)?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        let key = s.keys.get_mut(&id).expect("found above");
        if key.state == KeyState::PendingDeletion {
            return Err(rejected(key));
        }
        key.state = KeyState::PendingDeletion;
        key.deletion_date = Some(Utc::now() + chrono::Duration::days(days as i64));
        key.pending_days = Some(days as u32);
        Ok(ok(json!({})))
    })
}

/// Alibaba returns a key whose deletion was cancelled to Enabled.
fn cancel_deletion(app: &App, scope: &ScopeKey, p: &Params) -> Result<Response, ApiError> {
    let given = p.required("KeyId")?;
    app.store.with(scope, |s| {
        let id = find_key(s, scope, given, false)?;
        let key = s.keys.get_mut(&id).expect("found above");
        if key.state != KeyState::PendingDeletion {
            return Err(rejected(key));
        }
        key.state = KeyState::Enabled;
        key.deletion_date = None;
        key.pending_days = None;
        Ok(ok(json!({})))
    })
}
