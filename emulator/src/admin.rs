//! The test-facing admin API under `/_emulator/` (JSON, no authentication: the emulator binds
//! 127.0.0.1 only). Documented in tests/sdk/README.md.
//!
//!   GET    /_emulator/health                      {"ok": true}
//!   GET    /_emulator/credentials                 access keys and their accounts (no secrets)
//!   GET    /_emulator/state[?cloud=&account=&region=]   keys and aliases
//!   POST   /_emulator/keys                        create a key, or set an existing key's state
//!   POST   /_emulator/aliases                     set (or, with key_id null, remove) an alias directly
//!   GET    /_emulator/calls[?cloud=]              call counters;  DELETE resets them
//!   GET    /_emulator/faults                      fault rules;    POST adds/replaces one; DELETE removes
//!   POST   /_emulator/reset                       state, fault rules and counters back to empty

use axum::http::Method;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};

use crate::app::App;
use crate::config::derive_account;
use crate::faults::FaultRule;
use crate::state::{Key, KeyState, ScopeKey};
use crate::wire::{decode_query, random_alnum, respond, uuid4, Cloud, RawRequest};

fn reply(status: u16, v: Value) -> Response {
    respond(status, "application/json", v.to_string().into_bytes(), &[])
}

fn bad(msg: impl Into<String>) -> Response {
    reply(400, json!({ "error": msg.into() }))
}

pub fn handle(app: &App, req: &RawRequest) -> Response {
    let q = decode_query(&req.raw_query);
    let query = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let cloud_q = match query("cloud").map(|c| Cloud::parse(c).ok_or(c)) {
        Some(Err(c)) => return bad(format!("unknown cloud {c:?} (aws, alibaba, huawei)")),
        Some(Ok(c)) => Some(c),
        None => None,
    };
    let body =
        || -> Result<Value, String> { serde_json::from_slice(&req.body).map_err(|e| format!("body is not JSON: {e}")) };
    let path = req.path.trim_end_matches('/');
    match (&req.method, path) {
        (&Method::GET, "/_emulator/health") => reply(200, json!({ "ok": true })),
        (&Method::GET, "/_emulator/credentials") => {
            let list: Vec<Value> = app.credentials.list().map(|c| json!(c)).collect();
            reply(200, json!({ "credentials": list }))
        }
        (&Method::GET, "/_emulator/state") => {
            reply(200, app.store.snapshot(cloud_q, query("account"), query("region")))
        }
        (&Method::GET, "/_emulator/calls") => reply(200, app.counters.snapshot(cloud_q)),
        (&Method::DELETE, "/_emulator/calls") => {
            app.counters.reset();
            reply(200, json!({ "ok": true }))
        }
        (&Method::GET, "/_emulator/faults") => reply(200, json!({ "rules": app.faults.list() })),
        (&Method::POST, "/_emulator/faults") => match body() {
            Err(e) => bad(e),
            Ok(v) => match serde_json::from_value::<FaultRule>(v) {
                Err(e) => bad(format!("invalid fault rule: {e}")),
                Ok(rule) => match rule.validate() {
                    Err(e) => bad(e),
                    Ok(()) => {
                        tracing::info!(?rule, "fault rule set");
                        app.faults.set(rule);
                        reply(200, json!({ "ok": true, "rules": app.faults.list() }))
                    }
                },
            },
        },
        (&Method::DELETE, "/_emulator/faults") => {
            let removed = app.faults.clear(cloud_q, query("region"), query("account"));
            reply(200, json!({ "ok": true, "removed": removed }))
        }
        (&Method::POST, "/_emulator/reset") => {
            app.store.reset();
            app.faults.clear(None, None, None);
            app.counters.reset();
            tracing::info!("reset");
            reply(200, json!({ "ok": true }))
        }
        (&Method::POST, "/_emulator/keys") => body().and_then(|v| put_key(app, &v)).unwrap_or_else(bad),
        (&Method::POST, "/_emulator/aliases") => body().and_then(|v| put_alias(app, &v)).unwrap_or_else(bad),
        _ => reply(404, json!({ "error": format!("no admin endpoint {} {}", req.method, req.path) })),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The scope a body names: `cloud`, then `account` (Huawei: `project` or `account`) or an
/// `access_key_id` whose account is used, and `region` (default: the cloud's default region).
fn scope_of(app: &App, v: &Value) -> Result<ScopeKey, String> {
    let cloud = field(v, "cloud").and_then(Cloud::parse).ok_or("\"cloud\" must be aws, alibaba or huawei")?;
    let account = match (field(v, "account").or(field(v, "project")), field(v, "access_key_id")) {
        (Some(a), _) => a.to_string(),
        (None, Some(ak)) if cloud != Cloud::Huawei => app.credentials.account_for(cloud, ak),
        _ => {
            return Err(match cloud {
                Cloud::Huawei => "give \"project\" (the project id of the request path)".into(),
                _ => "give \"account\" or \"access_key_id\"".into(),
            })
        }
    };
    let region = match field(v, "region") {
        Some(r) => r.to_string(),
        None => match cloud {
            Cloud::Aws => "us-east-1".into(),
            Cloud::Alibaba => app.options.alibaba_region.clone(),
            Cloud::Huawei => app.options.huawei_region.clone(),
        },
    };
    Ok(ScopeKey { cloud, account, region })
}

/// Huawei keys and aliases record the creator's domain: `domain_id`, else the domain of
/// `access_key_id`, else one derived from the project.
fn owner_of(app: &App, scope: &ScopeKey, v: &Value) -> String {
    match scope.cloud {
        Cloud::Huawei => field(v, "domain_id").map(str::to_string).unwrap_or_else(|| match field(v, "access_key_id") {
            Some(ak) => app.credentials.account_for(Cloud::Huawei, ak),
            None => derive_account(Cloud::Huawei, &scope.account),
        }),
        _ => scope.account.clone(),
    }
}

fn parse_state(s: &str) -> Option<KeyState> {
    match s {
        "Enabled" | "2" => Some(KeyState::Enabled),
        "Disabled" | "3" => Some(KeyState::Disabled),
        "PendingDeletion" | "4" => Some(KeyState::PendingDeletion),
        _ => None,
    }
}

fn arn(scope: &ScopeKey, id: &str) -> Value {
    match scope.cloud {
        Cloud::Aws => json!(format!("arn:aws:kms:{}:{}:key/{id}", scope.region, scope.account)),
        Cloud::Alibaba => json!(format!("acs:kms:{}:{}:key/{id}", scope.region, scope.account)),
        Cloud::Huawei => Value::Null,
    }
}

/// Creates a key (id generated in the cloud's format unless `key_id` is given) or, when `key_id`
/// exists, sets its `state` / `description`. Lets tests set up keys without signing CreateKey.
fn put_key(app: &App, v: &Value) -> Result<Response, String> {
    let scope = scope_of(app, v)?;
    let state = match field(v, "state") {
        Some(s) => Some(parse_state(s).ok_or("\"state\" must be Enabled, Disabled or PendingDeletion")?),
        None => None,
    };
    let multi = v.get("multi_region").and_then(Value::as_bool).unwrap_or(false);
    let id = match field(v, "key_id") {
        Some(id) => id.to_string(),
        None => match scope.cloud {
            Cloud::Aws if multi => format!("mrk-{}", uuid4().replace('-', "")),
            Cloud::Alibaba => format!("key-{}", random_alnum(21)),
            _ => uuid4(),
        },
    };
    let owner = owner_of(app, &scope, v);
    let (created, state_now) = app.store.with(&scope, |s| {
        let created = !s.keys.contains_key(&id);
        let key = s.keys.entry(id.clone()).or_insert_with(|| {
            let mut k = Key::new(id.clone(), owner.clone());
            k.multi_region = multi;
            k.legacy_alias = Some(format!("emulator-{}", random_alnum(8)));
            k
        });
        if let Some(d) = field(v, "description") {
            key.description = d.to_string();
        }
        if let Some(st) = state {
            key.state = st;
            let pending = st == KeyState::PendingDeletion;
            key.deletion_date = pending.then(|| Utc::now() + chrono::Duration::days(30));
            key.pending_days = pending.then_some(30);
        }
        (created, key.state)
    });
    tracing::info!(cloud = scope.cloud.as_str(), account = %scope.account, region = %scope.region, key = %id, created, "admin key");
    Ok(reply(
        200,
        json!({
            "cloud": scope.cloud.as_str(),
            "account": scope.account,
            "region": scope.region,
            "key_id": id,
            "arn": arn(&scope, &id),
            "state": state_now.as_str(),
            "created": created,
        }),
    ))
}

/// Sets an alias with no validation at all (so tests can seed states the API refuses, e.g. an
/// alias pointing at a missing key); `"key_id": null` removes it.
fn put_alias(app: &App, v: &Value) -> Result<Response, String> {
    let scope = scope_of(app, v)?;
    let name = field(v, "alias").ok_or("\"alias\" is required")?.to_string();
    let key_id = match v.get("key_id") {
        Some(Value::String(k)) if !k.is_empty() => Some(k.clone()),
        Some(Value::Null) => None,
        _ => return Err("\"key_id\" must be a key id, or null to remove the alias".into()),
    };
    let owner = owner_of(app, &scope, v);
    let existed = app.store.with(&scope, |s| {
        let existed = s.aliases.contains_key(&name);
        match key_id {
            Some(k) => {
                s.put_alias(&name, Some(k), &owner);
            }
            None => {
                s.aliases.remove(&name);
            }
        }
        existed
    });
    Ok(reply(200, json!({ "ok": true, "existed": existed })))
}
