//! Huawei Cloud KMS (DEW), API v1.0: REST + JSON under `/v1.0/{project_id}/kms/…`, signed with APIG
//! AK/SK (`SDK-HMAC-SHA256`). State is scoped by project (from the path) and region (Host
//! `kms.<region>.myhuaweicloud.com`, else the listener's or the default region); `domain_id` comes
//! from the access key. KMS errors are `{"error": {"error_code", "error_msg"}}` (the documented
//! legacy shape); gateway errors (auth, throttling) are APIG's flat `{"error_code", "error_msg",
//! "request_id"}`. Codes the docs do not give for alias operations are the emulator's choice; see
//! tests/sdk/README.md.

use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::app::App;
use crate::config::HuaweiPrefix;
use crate::names;
use crate::state::{Alias, Key, KeyState, Scope, ScopeKey};
use crate::verify::AuthFailure;
use crate::wire::{decode_query, respond, uuid4, ApiError, CallInfo, Cloud, OpClass, RawRequest};

const CONTENT_TYPE: &str = "application/json;charset=UTF-8";
const LIST_DEFAULT: u64 = 50;
const LIST_MAX: u64 = 100;

/// (project, path after `/kms/`) of a KMS v1.0 path.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1.0/")?;
    let (project, rest) = rest.split_once('/')?;
    let action = rest.strip_prefix("kms/")?.trim_end_matches('/');
    (!project.is_empty()).then_some((project, action))
}

pub fn matches(req: &RawRequest) -> bool {
    split_path(&req.path).is_some()
}

/// Operation names as the official SDK calls them (`list_key_detail` = describe-key, `delete_key`
/// = schedule-key-deletion), used by fault rules and counters.
fn operation(method: &Method, action: &str) -> &'static str {
    match (method.as_str(), action) {
        ("POST", "create-key") => "CreateKey",
        ("POST", "describe-key") => "ListKeyDetail",
        ("POST", "aliases") => "CreateAlias",
        ("GET", "aliases") => "ListAliases",
        ("DELETE", "aliases") => "DeleteAlias",
        ("POST", "alias/associate") => "AssociateAlias",
        ("POST", "disable-key") => "DisableKey",
        ("POST", "enable-key") => "EnableKey",
        ("POST", "schedule-key-deletion") => "DeleteKey",
        ("POST", "cancel-key-deletion") => "CancelKeyDeletion",
        _ => "Unknown",
    }
}

fn region_from_host(host: &str) -> Option<String> {
    let rest = host.strip_suffix(".myhuaweicloud.com").or_else(|| host.strip_suffix(".myhuaweicloud.eu"))?;
    let region = rest.strip_prefix("kms.")?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

pub fn call_info(app: &App, req: &RawRequest) -> CallInfo {
    let (project, action) = split_path(&req.path).unwrap_or(("", ""));
    let operation = operation(&req.method, action).to_string();
    let region = region_from_host(req.hostname())
        .or_else(|| req.listener_region.clone())
        .unwrap_or_else(|| app.options.huawei_region.clone());
    let class = match operation.as_str() {
        "CreateKey" => OpClass::CreateKey,
        "ListKeyDetail" | "ListAliases" => OpClass::Read,
        _ => OpClass::Write,
    };
    CallInfo { cloud: Cloud::Huawei, operation, class, account: project.to_string(), region }
}

pub fn auth_error(f: AuthFailure) -> ApiError {
    let why = match f {
        AuthFailure::Missing(m) | AuthFailure::Incomplete(m) => m,
        AuthFailure::UnknownKey(ak) => format!("ak {ak} not found"),
        AuthFailure::Mismatch => "verify aksk signature fail".into(),
        AuthFailure::Expired(m) => m,
    };
    ApiError::new(401, "APIGW.0301", format!("Incorrect IAM authentication information: {why}"))
}

pub fn throttled() -> ApiError {
    ApiError::new(429, "APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit")
}

pub fn unavailable() -> ApiError {
    ApiError::new(503, "KMS.0101", "Service temporarily unavailable.")
}

fn request_id() -> String {
    uuid4().replace('-', "")
}

pub fn render_error(err: &ApiError, _info: &CallInfo) -> Response {
    let rid = request_id();
    let body = if err.code.starts_with("APIGW.") {
        json!({ "error_code": err.code, "error_msg": err.message, "request_id": rid })
    } else {
        json!({ "error": { "error_code": err.code, "error_msg": err.message } })
    };
    respond(err.status, CONTENT_TYPE, body.to_string().into_bytes(), &[("x-request-id", rid)])
}

fn ok(status: u16, v: Option<Value>) -> Response {
    let body = v.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    respond(status, CONTENT_TYPE, body, &[("x-request-id", request_id())])
}

pub fn execute(app: &App, req: &RawRequest, info: &CallInfo) -> Result<Response, ApiError> {
    if info.operation == "Unknown" {
        return Err(ApiError::new(
            404,
            "APIGW.0101",
            "The API does not exist or has not been published in the environment",
        ));
    }
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|_| kms(400, "KMS.0202", "The request message JSON is invalid."))?
    };
    if !body.is_object() {
        return Err(kms(400, "KMS.0202", "The request message JSON is invalid."));
    }
    // The caller's domain (account) is reported in domain_id / alias_urn.
    let domain = req
        .header("authorization")
        .and_then(crate::verify::parse_sdk_hmac)
        .map(|a| app.credentials.account_for(Cloud::Huawei, &a.access_key_id))
        .unwrap_or_default();
    let cx = Cx {
        app,
        scope: ScopeKey { cloud: Cloud::Huawei, account: info.account.clone(), region: info.region.clone() },
        domain,
    };
    let b = &body;
    match info.operation.as_str() {
        "CreateKey" => cx.create_key(b),
        "ListKeyDetail" => cx.describe_key(b),
        "CreateAlias" => cx.create_alias(b),
        "AssociateAlias" => cx.associate_alias(b),
        "ListAliases" => cx.list_aliases(&req.raw_query),
        "DeleteAlias" => cx.delete_alias(b),
        "DisableKey" => cx.set_enabled(b, false),
        "EnableKey" => cx.set_enabled(b, true),
        "DeleteKey" => cx.schedule_deletion(b),
        "CancelKeyDeletion" => cx.cancel_deletion(b),
        _ => unreachable!("operation() names only these"),
    }
}

fn kms(status: u16, code: &str, msg: impl Into<String>) -> ApiError {
    ApiError::new(status, code, msg)
}

fn key_missing() -> ApiError {
    kms(404, "KMS.0207", "The key does not exist.")
}

fn alias_missing(name: &str) -> ApiError {
    kms(404, "KMS.0207", format!("The alias {name} does not exist."))
}

fn pending_deletion() -> ApiError {
    kms(400, "KMS.0210", "The key is in Pending deletion state and cannot be used.")
}

fn opt_str<'a>(b: &'a Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(kms(400, "KMS.0202", format!("{field} must be a string."))),
    }
}

fn required<'a>(b: &'a Value, field: &str) -> Result<&'a str, ApiError> {
    opt_str(b, field)?.ok_or_else(|| kms(400, "KMS.0204", format!("The request message is missing {field}.")))
}

/// `^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$`, as the API reference states.
fn check_key_id(id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 36
        && id.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && id.bytes().all(|c| c == b'-' || c.is_ascii_digit() || c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(kms(400, "KMS.0205", "The key_id is invalid."))
    }
}

fn state_code(s: KeyState) -> &'static str {
    match s {
        KeyState::Enabled => "2",
        KeyState::Disabled => "3",
        KeyState::PendingDeletion => "4",
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn millis(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

struct Cx<'a> {
    app: &'a App,
    scope: ScopeKey,
    domain: String,
}

impl Cx<'_> {
    fn with<R>(&self, f: impl FnOnce(&mut Scope) -> R) -> R {
        self.app.store.with(&self.scope, f)
    }

    fn check_alias(&self, name: &str) -> Result<(), ApiError> {
        let rules = names::huawei(self.app.options.huawei_prefix == HuaweiPrefix::Required);
        names::check(&rules, name).map_err(|_| kms(400, "KMS.0308", format!("The alias {name} is invalid.")))
    }

    fn entity(&self, name: &str, a: &Alias) -> Value {
        json!({
            "domain_id": a.owner,
            "key_id": a.key_id,
            "alias": name,
            "alias_urn": format!("kms:{}:{}:alias:{name}", self.scope.region, a.owner),
            "create_time": iso(a.created),
            "update_time": iso(a.updated),
        })
    }

    fn key_info(&self, k: &Key) -> Value {
        json!({
            "key_id": k.id,
            "domain_id": k.owner,
            "key_alias": k.legacy_alias.clone().unwrap_or_default(),
            "realm": self.scope.region,
            "key_spec": "AES_256",
            "key_usage": "ENCRYPT_DECRYPT",
            "key_description": k.description,
            "creation_date": millis(k.created),
            "scheduled_deletion_date": k.deletion_date.map(millis).unwrap_or_default(),
            "key_state": state_code(k.state),
            "default_key_flag": "0",
            "key_type": "1",
            "expiration_time": "",
            "origin": "kms",
            "key_rotation_enabled": "false",
            "sys_enterprise_project_id": "0",
            "keystore_id": "0",
        })
    }

    /// A key of this project by id, after the id's format check.
    fn key_id<'b>(&self, s: &Scope, b: &'b Value, field: &str) -> Result<&'b str, ApiError> {
        let id = required(b, field)?;
        check_key_id(id)?;
        if s.keys.contains_key(id) {
            Ok(id)
        } else {
            Err(key_missing())
        }
    }

    fn create_key(&self, b: &Value) -> Result<Response, ApiError> {
        let legacy = required(b, "key_alias")?;
        let legacy_ok = legacy.len() <= 255
            && legacy.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '/'));
        if !legacy_ok {
            return Err(kms(400, "KMS.1101", "The key_alias is invalid."));
        }
        let description = opt_str(b, "key_description")?.unwrap_or("").to_string();
        self.with(|s| {
            if s.keys.values().any(|k| k.legacy_alias.as_deref() == Some(legacy)) {
                return Err(kms(400, "KMS.1104", "The key alias already exists."));
            }
            let id = uuid4();
            let mut k = Key::new(id.clone(), self.domain.clone());
            k.legacy_alias = Some(legacy.to_string());
            k.description = description;
            s.keys.insert(id.clone(), k);
            Ok(ok(
                200,
                Some(json!({ "key_info": { "key_id": id, "domain_id": self.domain, "region_id": self.scope.region } })),
            ))
        })
    }

    fn describe_key(&self, b: &Value) -> Result<Response, ApiError> {
        self.with(|s| {
            let id = self.key_id(s, b, "key_id")?;
            Ok(ok(200, Some(json!({ "key_info": self.key_info(&s.keys[id]) }))))
        })
    }

    /// 201 with the alias. Duplicates answer KMS.1104, the documented "key alias already exists".
    fn create_alias(&self, b: &Value) -> Result<Response, ApiError> {
        let key_ref = required(b, "key_id")?;
        check_key_id(key_ref)?;
        let name = required(b, "alias")?;
        self.check_alias(name)?;
        self.with(|s| {
            let id = self.key_id(s, b, "key_id")?.to_string();
            if s.keys[&id].state == KeyState::PendingDeletion {
                return Err(pending_deletion());
            }
            if s.aliases.contains_key(name) {
                return Err(kms(400, "KMS.1104", format!("The alias {name} already exists.")));
            }
            let a = s.put_alias(name, Some(id), &self.domain).clone();
            Ok(ok(201, Some(self.entity(name, &a))))
        })
    }

    fn associate_alias(&self, b: &Value) -> Result<Response, ApiError> {
        let name = required(b, "alias")?;
        let target = required(b, "target_key_id")?;
        check_key_id(target)?;
        self.with(|s| {
            if !s.aliases.contains_key(name) {
                return Err(alias_missing(name));
            }
            let id = self.key_id(s, b, "target_key_id")?.to_string();
            if s.keys[&id].state == KeyState::PendingDeletion {
                return Err(pending_deletion());
            }
            let owner = s.aliases[name].owner.clone();
            let a = s.put_alias(name, Some(id), &owner).clone();
            Ok(ok(200, Some(self.entity(name, &a))))
        })
    }

    /// `limit` 1–100 (a string on the wire). `marker` = the last alias name of the previous page, as
    /// `page_info.next_marker` hands it out: the page starts after that name (aliases are ordered by name),
    /// so an alias created or deleted between pages shifts nothing. The ListAliases reference calls the
    /// marker only the "start position of pagination query"; a name-shaped marker is what Terraform's
    /// provider and our provider pass back unchanged. A marker that is no valid alias name is KMS.1602.
    /// `next_marker` is "" on the last page.
    fn list_aliases(&self, raw_query: &str) -> Result<Response, ApiError> {
        let q = decode_query(raw_query);
        let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let limit = match get("limit") {
            None => LIST_DEFAULT,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=LIST_MAX).contains(n))
                .ok_or_else(|| kms(400, "KMS.1601", "The limit is not within the valid range."))?,
        };
        let marker = get("marker");
        if let Some(m) = marker {
            self.check_alias(m).map_err(|_| kms(400, "KMS.1602", "The marker is invalid."))?;
        }
        let key_filter = get("key_id");
        if let Some(k) = key_filter {
            check_key_id(k)?;
        }
        self.with(|s| {
            if key_filter.is_some_and(|k| !s.keys.contains_key(k)) {
                return Err(key_missing());
            }
            let after = match marker {
                Some(m) => s.aliases.range::<str, _>((std::ops::Bound::Excluded(m), std::ops::Bound::Unbounded)),
                None => s.aliases.range::<str, _>(..),
            };
            let mut rest = after.filter(|(_, a)| key_filter.is_none_or(|k| a.key_id.as_deref() == Some(k))).peekable();
            let mut page = Vec::new();
            let mut last = None;
            while (page.len() as u64) < limit {
                let Some((n, a)) = rest.next() else { break };
                page.push(self.entity(n, a));
                last = Some(n.clone());
            }
            let more = rest.peek().is_some();
            Ok(ok(
                200,
                Some(json!({
                    "aliases": page,
                    "page_info": {
                        "next_marker": if more { last.unwrap_or_default() } else { String::new() },
                        "current_count": page.len(),
                        "truncated": more.to_string(),
                    },
                })),
            ))
        })
    }

    /// DELETE with a JSON body `{key_id, aliases: [...]}`; all-or-nothing; each alias must point at
    /// `key_id`. 204, empty body.
    fn delete_alias(&self, b: &Value) -> Result<Response, ApiError> {
        let key_ref = required(b, "key_id")?;
        check_key_id(key_ref)?;
        let names: Vec<&str> = match b.get("aliases") {
            Some(Value::Array(v)) if !v.is_empty() => v
                .iter()
                .map(|x| x.as_str().filter(|s| !s.is_empty()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| kms(400, "KMS.0202", "aliases must be a list of strings."))?,
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                return Err(kms(400, "KMS.0204", "The request message is missing aliases."))
            }
            Some(_) => return Err(kms(400, "KMS.0202", "aliases must be a list of strings.")),
        };
        self.with(|s| {
            let id = self.key_id(s, b, "key_id")?.to_string();
            for n in &names {
                if s.aliases.get(*n).and_then(|a| a.key_id.as_deref()) != Some(id.as_str()) {
                    return Err(alias_missing(n));
                }
            }
            for n in &names {
                s.remove_alias(n);
            }
            Ok(ok(204, None))
        })
    }

    fn set_enabled(&self, b: &Value, enable: bool) -> Result<Response, ApiError> {
        self.with(|s| {
            let id = self.key_id(s, b, "key_id")?.to_string();
            let key = s.keys.get_mut(&id).expect("checked");
            match (key.state, enable) {
                (KeyState::PendingDeletion, _) => return Err(pending_deletion()),
                (KeyState::Enabled, true) => return Err(kms(400, "KMS.1201", "The key is not disabled.")),
                (KeyState::Disabled, false) => return Err(kms(400, "KMS.1301", "The key is not enabled.")),
                _ => {}
            }
            key.state = if enable { KeyState::Enabled } else { KeyState::Disabled };
            Ok(ok(200, Some(json!({ "key_info": { "key_id": id, "key_state": state_code(key.state) } }))))
        })
    }

    fn schedule_deletion(&self, b: &Value) -> Result<Response, ApiError> {
        let days = required(b, "pending_days")?
            .parse::<i64>()
            .ok()
            .filter(|d| (7..=1096).contains(d))
            .ok_or_else(|| kms(400, "KMS.1401", "pending_days must be within 7 to 1096."))?;
        self.with(|s| {
            let id = self.key_id(s, b, "key_id")?.to_string();
            let key = s.keys.get_mut(&id).expect("checked");
            if key.state == KeyState::PendingDeletion {
                return Err(kms(400, "KMS.1402", "The key is already in Pending deletion state."));
            }
            key.state = KeyState::PendingDeletion;
            key.deletion_date = Some(Utc::now() + chrono::Duration::days(days));
            key.pending_days = Some(days as u32);
            Ok(ok(200, Some(json!({ "key_id": id, "key_state": "4" }))))
        })
    }

    /// Huawei leaves a key whose deletion was cancelled Disabled.
    fn cancel_deletion(&self, b: &Value) -> Result<Response, ApiError> {
        self.with(|s| {
            let id = self.key_id(s, b, "key_id")?.to_string();
            let key = s.keys.get_mut(&id).expect("checked");
            if key.state != KeyState::PendingDeletion {
                return Err(kms(400, "KMS.1501", "The key is not in Pending deletion state."));
            }
            key.state = KeyState::Disabled;
            key.deletion_date = None;
            key.pending_days = None;
            Ok(ok(200, Some(json!({ "key_id": id, "key_state": "3" }))))
        })
    }
}
